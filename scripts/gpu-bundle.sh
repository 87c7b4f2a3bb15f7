#!/usr/bin/env bash
# Builds vapo here (Release, CUDA for sm_90 + compute_90 PTX) and packs what
# the GPU machine runs into DIR, so that a bare machine with only a driver,
# python3 + PyTorch and NVIDIA's pip wheels runs it without building:
#
#   DIR/bin/     the five programs, the parity tests, the benchmarks, make-test-model
#                (stripped; RPATH $ORIGIN/../lib)
#   DIR/lib/     every shared library they need that such a machine lacks (BLIS,
#                libgomp, jansson, libmicrohttpd and its TLS chain, libpng, ...)
#   DIR/models/  the bundled model;  DIR/data/fashion-mnist/  a slice of Fashion-MNIST
#   DIR/bench/, DIR/tests/*.py   bench/gpu_check.sh and the Python it runs
#   DIR/MANIFEST what was built, from which commit, and the library check
#
# Only glibc, libstdc++, libgcc, zlib, the driver's libcuda and cuBLAS/cuDNN
# (found at run time in the pip wheels; the CUDA runtime is linked
# statically) may resolve outside DIR: checked here with ldd, and the script
# fails otherwise. Then, on the GPU machine: DIR/bench/gpu_check.sh --prebuilt DIR
# (bench/BENCHMARKS.md, "GPU", gives the device tool's command).
#
#   scripts/gpu-bundle.sh [options] DIR
#     --build-dir B     build folder (default: build-gpu-bundle/ in the checkout)
#     --no-build        pack what B holds (it must be built already)
#     --allow-cpu       pack a build without the CUDA backend (tests of this script)
#     --train-images N  training images in the dataset slice (default 6000; 1000 test images)
#     --max-mib M       fail when DIR is larger (default 52: the checkout travels too, 64 MiB in all)
#   JOBS=N              build parallelism (default: all cores)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build-gpu-bundle
do_build=1 allow_cpu=0 train_images=6000 test_images=1000 max_mib=52 out=""
die() { echo "gpu-bundle: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build=$(realpath -m "${2:?--build-dir needs a folder}"); shift ;;
    --no-build) do_build=0 ;;
    --allow-cpu) allow_cpu=1 ;;
    --train-images) train_images=${2:?}; shift ;;
    --max-mib) max_mib=${2:?}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$out" ] || die "one DIR only"; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || { usage >&2; exit 2; }
[[ $train_images =~ ^[0-9]+$ && $max_mib =~ ^[0-9]+$ ]] || die "--train-images and --max-mib take numbers"
command -v patchelf >/dev/null || die "patchelf is missing (scripts/setup.sh installs it)"

programs=(vapo-train vapo-sample vapo-interpolate vapo-score vapo-serve)
tests=(tests/test_backend_ops tests/train_step_parity tests/test_ode_batch tests/test_conv_select tests/make-test-model)
benches=(bench/bench_train_step bench/bench_sample)

if [ $do_build = 1 ]; then
  echo "gpu-bundle: building in $build"
  mkdir -p "$build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DVAPO_CUDA=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=90-real;90-virtual" >"$build/bundle-configure.log" 2>&1 ||
    { tail -20 "$build/bundle-configure.log"; die "configure failed"; }
  grep 'vapo:' "$build/bundle-configure.log" | sed 's/^/  /'
  targets=("${programs[@]}")
  for t in "${tests[@]}" "${benches[@]}"; do targets+=("${t##*/}"); done
  cmake --build "$build" -j"${JOBS:-$(nproc)}" --target "${targets[@]}" >"$build/bundle-build.log" 2>&1 ||
    { grep -E 'error' "$build/bundle-build.log" | head -20; die "build failed (see $build/bundle-build.log)"; }
fi
cuda=no
[ -f "$build/kernels/libvapo_cuda.a" ] && cuda=yes
[ $cuda = yes ] || [ $allow_cpu = 1 ] || die "$build has no CUDA backend (nvcc and cuDNN not found?); --allow-cpu packs it anyway"

# DIR is replaced: only an empty folder or an earlier bundle
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ] && [ ! -f "$out/MANIFEST" ]; then
  die "$out is not empty and holds no MANIFEST: not replacing it"
fi
rm -rf "$out"
mkdir -p "$out"/{bin,lib,models,data/fashion-mnist,bench,tests}
out=$(cd "$out" && pwd)
echo "vapo GPU bundle: incomplete (gpu-bundle.sh did not finish)" >"$out/MANIFEST"
for f in "${programs[@]}" "${tests[@]}" "${benches[@]}"; do
  [ -x "$build/$f" ] || die "$build/$f is not built"
  strip -o "$out/bin/${f##*/}" "$build/$f"
done

# Libraries a bare CUDA machine has (or must provide: the driver, and the
# wheels' cuBLAS/cuDNN): everything else that ldd resolves is copied.
allowed='(linux-vdso\.so|ld-linux-x86-64\.so|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libstdc\+\+\.so|libgcc_s\.so|libz\.so|libcuda\.so|libcudart\.so|libcudnn[a-z_]*\.so|libcublas(Lt)?\.so)'
for f in "$out"/bin/*; do
  ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r soname path; do
  [[ $soname =~ ^$allowed ]] && continue
  [ -f "$out/lib/$soname" ] || strip --strip-unneeded -o "$out/lib/$soname" "$(realpath "$path")"
done
chmod 755 "$out"/lib/* 2>/dev/null || true
for f in "$out"/bin/*; do patchelf --force-rpath --set-rpath '$ORIGIN/../lib' "$f"; done
for f in "$out"/lib/*; do [ -e "$f" ] && patchelf --force-rpath --set-rpath '$ORIGIN' "$f"; done

# The check: nothing outside DIR but the allowed libraries, nothing missing
# but cuBLAS/cuDNN (which a machine without them cannot resolve).
bad=$(for f in "$out"/bin/* "$out"/lib/*; do
  [ -e "$f" ] || continue
  ldd "$f" 2>&1 | awk -v f="${f#"$out"/}" -v d1="$out/lib/" -v d2="$out/bin/../lib/" '
    $2 == "=>" && $3 == "not" { print f ": " $1 " not found"; next }
    $2 == "=>" && index($3, d1) != 1 && index($3, d2) != 1 { print f ": " $1 " => " $3 }'
done | grep -vE ": $allowed" || true)
[ -z "$bad" ] || { echo "$bad" >&2; die "libraries resolve outside $out/lib (above)"; }

# The model, the Python the GPU check runs (with the helpers it imports), the scripts.
cp "$root/models/fmnist-small.safetensors" "$out/models/"
cp "$root"/bench/*.py "$root/bench/gpu_check.sh" "$out/bench/"
cp "$root/tests/pngio.py" "$root/tests/oracle_torch.py" "$out/tests/"
mkdir -p "$out/scripts" && cp "${BASH_SOURCE[0]}" "$out/scripts/gpu-bundle.sh"

# The first N training and test images (and labels) of Fashion-MNIST, as idx.gz.
fm=/usr/share/datasets/fashion-mnist
if [ -f "$fm/train-images-idx3-ubyte.gz" ]; then
  python3 - "$fm" "$out/data/fashion-mnist" "$train_images" "$test_images" <<'EOF'
import gzip, struct, sys
src, dst, n_train, n_test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for split, n in (("train", n_train), ("t10k", n_test)):
    for kind, dims in (("images-idx3", 3), ("labels-idx1", 1)):
        name = f"{split}-{kind}-ubyte.gz"
        with gzip.open(f"{src}/{name}", "rb") as f:
            head = f.read(4 + 4 * dims)
            shape = struct.unpack(">" + "I" * dims, head[4:])
            k = min(n, shape[0])
            item = 1
            for s in shape[1:]:
                item *= s
            body = f.read(k * item)
        with gzip.GzipFile(f"{dst}/{name}", "wb", compresslevel=9, mtime=0) as g:
            g.write(head[:4] + struct.pack(">I", k) + head[8:] + body)
EOF
else
  echo "gpu-bundle: $fm not found: no dataset slice (the training leg will be skipped)" >&2
fi

mib=$(du -sm "$out" | cut -f1)
{
  echo "vapo GPU bundle"
  echo "commit: $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "made: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m), $(ldd --version | head -1)"
  echo "cuda: $cuda ($(grep -m1 '^CMAKE_CUDA_ARCHITECTURES' "$build/CMakeCache.txt" 2>/dev/null | cut -d= -f2 || echo -))"
  echo "size: ${mib} MiB"
  echo "dataset slice: $train_images training, $test_images test images"
  echo "bundled libraries: $(cd "$out/lib" && ls | tr '\n' ' ')"
  echo "resolved outside the bundle (allowed):"
  for f in "$out"/bin/*; do ldd "$f"; done | awk '$2 == "=>" { print "  " $1 }' | sort -u |
    while read -r l; do [[ $l =~ ^$allowed ]] && echo "  $l"; done
} >"$out/MANIFEST"
echo "gpu-bundle: $out: ${mib} MiB, CUDA $cuda; $(ls "$out/bin" | wc -l) programs, $(ls "$out/lib" | wc -l) libraries"
[ "$mib" -le "$max_mib" ] || die "$out is ${mib} MiB, over --max-mib $max_mib"
