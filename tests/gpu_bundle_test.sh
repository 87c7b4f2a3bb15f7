#!/usr/bin/env bash
# The GPU bundle and the GPU check, on this (CPU) machine: ctest label gpu-bundle.
#   gpu_bundle_test.sh bundle BUILD DIR    scripts/gpu-bundle.sh packs BUILD into DIR; then, checked
#                                          here: ldd of every program and library resolves nothing
#                                          outside DIR but glibc, libstdc++, libgcc, zlib and the CUDA
#                                          libraries; the bundled vapo-serve --version and a CPU-only
#                                          test_backend_ops run; DIR is at most 60 MiB
#   gpu_bundle_test.sh dry-run DIR WORK    DIR/bench/gpu_check.sh --prebuilt DIR --device cpu with a
#                                          120 s budget: ends inside it, exit 0, the GPU steps say
#                                          "no CUDA device", summary.md and the tarball are written
set -uo pipefail
fail() { echo "FAIL: $*"; exit 1; }
mode=$1
root=$(cd "$(dirname "$0")/.." && pwd)

if [ "$mode" = bundle ]; then
  build=$2 dir=$3 flags=()
  [ -f "$build/kernels/libvapo_cuda.a" ] || flags=(--allow-cpu) # a build without CUDA is packed too
  bash "$root/scripts/gpu-bundle.sh" --build-dir "$build" --no-build "${flags[@]}" --max-mib 60 "$dir" ||
    fail "gpu-bundle.sh failed"
  allowed='^(linux-vdso|ld-linux-x86-64|libc|libm|libpthread|libdl|librt|libresolv|libstdc\+\+|libgcc_s|libz|libcuda|libcudart|libcudnn[a-z_]*|libcublas|libcublasLt)\.so'
  n=0
  for f in "$dir"/bin/* "$dir"/lib/*; do
    n=$((n + 1))
    while read -r soname arrow path _; do
      [ "$arrow" = "=>" ] || continue
      real=$(realpath -m "$path" 2>/dev/null)
      case $real in "$dir"/lib/*) continue ;; esac
      [[ $soname =~ $allowed ]] || fail "${f#"$dir"/}: $soname resolves to $path, outside the bundle"
    done < <(ldd "$f" 2>&1)
  done
  [ $n -ge 15 ] || fail "only $n files in $dir/bin and $dir/lib"
  for p in vapo-train vapo-sample vapo-interpolate vapo-score vapo-serve test_backend_ops train_step_parity \
    test_ode_batch bench_train_step bench_sample make-test-model; do
    [ -x "$dir/bin/$p" ] || fail "$p is not in the bundle"
  done
  [ -f "$dir/models/fmnist-small.safetensors" ] || fail "no model in the bundle"
  [ -x "$dir/bench/gpu_check.sh" ] || [ -f "$dir/bench/gpu_check.sh" ] || fail "no gpu_check.sh in the bundle"
  v=$(cd / && "$dir/bin/vapo-serve" --version 2>&1) || fail "bundled vapo-serve --version: $v"
  [[ $v == vapo-serve* ]] || fail "vapo-serve --version printed '$v'"
  out=$(cd "$dir" && CUDA_VISIBLE_DEVICES= "$dir/bin/test_backend_ops" 2>&1) || fail "bundled test_backend_ops: $(echo "$out" | tail -3)"
  echo "$out" | grep -q 'checks, 0 failed' || fail "test_backend_ops: $(echo "$out" | tail -1)"
  mib=$(du -sm "$dir" | cut -f1)
  [ "$mib" -le 60 ] || fail "the bundle is $mib MiB (over 60)"
  echo "bundle ok: $mib MiB, $n programs and libraries; $(echo "$out" | tail -1)"
  exit 0
fi

if [ "$mode" = dry-run ]; then
  dir=$2 work=$3 budget=120
  [ -d "$dir/bin" ] || fail "no bundle at $dir"
  rm -rf "$work" "$work.wheels" && mkdir -p "$work" "$work.wheels/nvidia/cudnn/lib" "$work.wheels/nvidia/cublas/lib"
  t=$(date +%s)
  # a stand-in for NVIDIA's pip wheels (namespace packages nvidia.cudnn, nvidia.cublas): their lib folders go on LD_LIBRARY_PATH
  PYTHONPATH=$work.wheels${PYTHONPATH:+:$PYTHONPATH} \
    bash "$dir/bench/gpu_check.sh" --prebuilt "$dir" --device cpu --budget $budget --out "$work" >"$work.log" 2>&1
  rc=$? secs=$(($(date +%s) - t))
  tail -25 "$work.log"
  [ $secs -le $((budget + 5)) ] || fail "gpu_check.sh ran ${secs}s, budget $budget"
  [ $rc = 0 ] || fail "gpu_check.sh exited $rc"
  [ -s "$work/summary.md" ] || fail "no summary.md"
  list=$(tar -tzf "$work/gpu_check.tar.gz") || fail "no readable gpu_check.tar.gz"
  for f in summary.md logs/01-environment.log; do echo "$list" | grep -qx "$f" || fail "$f not in the tarball"; done
  s=$work/summary.md
  for step in test_backend_ops train_step_parity test_ode_batch; do
    grep -q "^| $step | skip | 0 s | no CUDA device |" "$s" || fail "$step does not say 'no CUDA device'"
  done
  grep -q '^| environment | ok ' "$s" || fail "environment row"
  grep -q "LD_LIBRARY_PATH): $work.wheels/nvidia/cudnn/lib:$work.wheels/nvidia/cublas/lib" "$work.log" ||
    fail "the wheels' cudnn/cublas lib folders are not on LD_LIBRARY_PATH"
  grep -q '^| train-tiny-vapo | ok ' "$s" || fail "the vapo training-step benchmark did not run"
  grep -q '| FAIL |' "$s" && fail "a step failed"
  if grep -q '^| train | ok ' "$s"; then
    echo "$list" | grep -q '^train/.*\.safetensors$' || fail "the training leg's checkpoint is not in the tarball"
  else
    grep -q '^| train | skip ' "$s" || fail "no training-leg row"
  fi
  echo "dry run ok: ${secs}s of $budget"
  exit 0
fi
fail "usage: gpu_bundle_test.sh bundle BUILD DIR | dry-run DIR WORK"
