#!/usr/bin/env bash
# The GPU machine's check, in one command that cannot waste a run: every
# outcome, a failure or a run cut short included, comes back as evidence.
#
#   bench/gpu_check.sh --prebuilt DIR     run a bundle made by scripts/gpu-bundle.sh
#   bench/gpu_check.sh                    fallback: build here (build-gpu/, Release, CUDA)
#
# Options:
#   --budget S     seconds for everything, each step counted (default 540); every
#                  step runs under `timeout` capped by what is left, and the script
#                  ends inside the budget
#   --out DIR      where the evidence goes (default: $OUT, else /tmp/vapo-gpu-check)
#   --device cpu   a dry run on a machine without a GPU: the GPU steps report
#                  "no CUDA device", the rest runs at toy sizes on the CPU (what
#                  tests/gpu_check_dry_run.cmake runs); default: cuda
#   --no-train     skip the training leg
#   PYTHON=...     the interpreter with torch (default: the first python3 that imports it)
#
# What it writes, after EVERY step, in OUT: gpu_check.tar.gz (one log per step,
# summary.md, the training leg's newest checkpoint, sample grid and metrics)
# and summary.md (the same file, readable without unpacking). Steps, in order:
# the environment (GPU, driver, nvcc, python/torch, where cuDNN/cuBLAS were
# found, ldd of a program), parity (test_backend_ops, train_step_parity,
# test_ode_batch, test_conv_select), benchmarks against PyTorch on the same
# GPU (training step, eager and torch.compile, fmnist-small and cifar10;
# RK45 sampling vs SciPy and a batched on-GPU RK45; vapo-serve --device cuda
# with concurrent clients), then the training leg with the time left (the
# bundled model's recipe on the GPU, a checkpoint and grid packed every
# minute). Exit status: 0 when no step failed (skips and PyTorch references
# that cannot run do not count).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
budget=540 prebuilt="" device=cuda out=${OUT:-/tmp/vapo-gpu-check} train_leg=1
usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --prebuilt) prebuilt=$(cd "${2:?--prebuilt needs a folder}" && pwd) || exit 2; shift ;;
    --budget) budget=${2:?}; shift ;;
    --out) out=${2:?}; shift ;;
    --device) device=${2:?}; shift ;;
    --no-train) train_leg=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $budget =~ ^[0-9]+$ ]] || { echo "gpu_check: --budget takes seconds" >&2; exit 2; }
[[ $device == cuda || $device == cpu ]] || { echo "gpu_check: --device is cuda or cpu" >&2; exit 2; }

t0=$(date +%s)
reserve=12 # seconds kept for the last packing
now() { date +%s; }
left() { echo $((budget - ($(now) - t0))); }
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vapo-gpu-check.XXXXXX")
mkdir -p "$work/logs"
trap 'pack; kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
trap 'exit 143' TERM INT

# ---- the summary, rewritten and packed after every step ----------------------------
declare -a rows=() btable=()
status=0 nstep=0
# row NAME ok|FAIL|skip|n/a SECONDS DETAIL
row() {
  rows+=("| $1 | $2 | $3 s | ${4//|//} |")
  case $2 in ok | skip | n/a) ;; *) status=1 ;; esac
  write_summary
  pack
}
write_summary() {
  {
    echo "# bench/gpu_check.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "$env_line"
    echo
    echo "| step | result | time | detail |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    if [ ${#btable[@]} -gt 0 ]; then
      echo
      echo "| benchmark | vapo | reference | speed of vapo / reference |"
      echo "| --- | --- | --- | --- |"
      printf '%s\n' "${btable[@]}"
    fi
    echo
    echo "$(($(now) - t0)) s of the ${budget} s budget used; logs in gpu_check.tar.gz (logs/NN-step.log)."
  } >"$work/summary.md"
}
# The tarball under OUT: logs, summary, and of the training leg only the newest
# checkpoint and grid (the device tool returns files of at most 16 MiB).
pack() {
  local keep=() f
  [ -d "$work" ] || return 0
  if [ -d "$work/train" ]; then
    f=$(ls -t "$work"/train/*.safetensors 2>/dev/null | head -1) && [ -n "$f" ] && keep+=("train/${f##*/}")
    f=$(ls -t "$work"/train/*.png 2>/dev/null | head -1) && [ -n "$f" ] && keep+=("train/${f##*/}")
    for f in "$work"/train/*.jsonl "$work"/train/*.log; do [ -f "$f" ] && keep+=("train/${f##*/}"); done
  fi
  tar -czf "$out/gpu_check.tar.gz.part" -C "$work" summary.md logs ${keep[@]+"${keep[@]}"} 2>/dev/null &&
    mv -f "$out/gpu_check.tar.gz.part" "$out/gpu_check.tar.gz"
  cp -f "$work/summary.md" "$out/summary.md" 2>/dev/null
  return 0
}

# run NAME CAP [KEEP] -- CMD...: CMD under timeout, at most CAP seconds and never
# into the last KEEP + reserve seconds of the budget; output in logs/NN-NAME.log.
# Sets rc ("skip" when no time is left), secs, log.
run() {
  local name=$1 cap=$2 keep=0 lim
  shift 2
  if [ "$1" != -- ]; then keep=$1; shift; fi
  shift
  nstep=$((nstep + 1))
  log=$work/logs/$(printf '%02d' $nstep)-$name.log
  lim=$(($(left) - reserve - keep))
  [ $lim -gt "$cap" ] && lim=$cap
  secs=0
  if [ $lim -lt 5 ]; then
    rc=skip
    echo "skipped: ${lim}s of the budget left for it" >"$log"
    return
  fi
  echo "-- $name (at most ${lim}s, $(left)s left)"
  local t
  t=$(now)
  { echo "\$ $*"; echo "(timeout ${lim}s)"; } >"$log"
  timeout -k 3 "$lim" "$@" >>"$log" 2>&1
  rc=$? secs=$(($(now) - t))
  [ $rc = 124 ] || [ $rc = 137 ] && echo "TIMEOUT after ${lim}s" >>"$log"
}
# verdict: ok, or why not, from rc and the log
verdict() {
  case $rc in
    0) echo ok ;;
    skip) echo "skipped: budget spent" ;;
    124 | 137) echo "timeout: $(grep -v '^TIMEOUT' "$log" | tail -1 | cut -c1-120)" ;;
    *) echo "rc=$rc: $(grep -v '^RESULT' "$log" | tail -1 | cut -c1-160)" ;;
  esac
}

# ---- the programs: the bundle's, or a build here -------------------------------------
prog() { # the path of program NAME
  if [ -n "$prebuilt" ]; then echo "$prebuilt/bin/$1"; return; fi
  local d
  for d in "$build" "$build/tests" "$build/bench"; do [ -x "$d/$1" ] && { echo "$d/$1"; return; }; done
  echo "$build/$1"
}
if [ -n "$prebuilt" ]; then
  model=$prebuilt/models/fmnist-small.safetensors data=$prebuilt/data/fashion-mnist pydir=$prebuilt/bench
else
  build=${BUILD_DIR:-$root/build-gpu}
  model=$root/models/fmnist-small.safetensors data=/usr/share/datasets/fashion-mnist pydir=$root/bench
fi

# cuDNN, cuBLAS (and the CUDA runtime, for builds that link it shared) from
# NVIDIA's pip wheels, CUDNN_ROOT, or the toolkit: onto LD_LIBRARY_PATH.
pick_python() {
  local p
  for p in ${PYTHON:-python3 /usr/bin/python3}; do
    if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then echo "$p"; return; fi
  done
}
py=$(pick_python)
cuda_dirs=""
for p in ${py:-} python3; do
  cuda_dirs=$("$p" - 2>/dev/null <<'EOF'
import importlib, os
for m in ("cudnn", "cublas", "cuda_runtime", "cuda_nvrtc", "nvjitlink"):
    try:
        mod = importlib.import_module("nvidia." + m)
    except Exception:
        continue
    for d in mod.__path__:
        if os.path.isdir(os.path.join(d, "lib")):
            print(os.path.join(d, "lib"))
EOF
  ) && [ -n "$cuda_dirs" ] && break
done
for d in ${CUDNN_ROOT:+$CUDNN_ROOT/lib $CUDNN_ROOT/lib64} /usr/local/cuda/lib64 /usr/local/cuda/lib; do
  [ -d "$d" ] && cuda_dirs+=$'\n'"$d"
done
cuda_path=$(echo "$cuda_dirs" | grep -v '^$' | paste -sd: -)
export LD_LIBRARY_PATH=${cuda_path}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_WAIT_POLICY=passive PYTHONUNBUFFERED=1

# ---- step 1: the environment ----------------------------------------------------------
gpu=""
command -v nvidia-smi >/dev/null && gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap \
  --format=csv,noheader -i 0 2>/dev/null | head -1)
has_gpu=0 active=1 # active: the benchmarks run (on the GPU, or on the CPU for a dry run)
[ "$device" = cuda ] && [ -n "$gpu" ] && has_gpu=1
[ "$device" = cuda ] && [ $has_gpu = 0 ] && active=0
env_line="GPU: ${gpu:-none found}; $(nproc) CPU cores; mode: $([ -n "$prebuilt" ] && echo "prebuilt $prebuilt" || echo "build here"); device $device"
environment() {
  echo "date: $(date -u)"
  echo "nvidia-smi: ${gpu:-not found or no GPU}"
  command -v nvidia-smi >/dev/null && nvidia-smi 2>&1 | head -15
  echo "nvcc: $(command -v nvcc >/dev/null && nvcc --version | tail -2 | tr '\n' ' ' || echo 'not found')"
  echo "glibc: $(ldd --version 2>&1 | head -1); kernel $(uname -r); $(nproc) cores"
  echo "python with torch: ${py:-none}"
  [ -n "$py" ] && "$py" -c 'import sys, torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "available", torch.cuda.is_available(), "cudnn", torch.backends.cudnn.version(), "python", sys.version.split()[0])' 2>&1
  [ -n "$py" ] && "$py" -c 'import scipy; print("scipy", scipy.__version__)' 2>&1 | tail -1
  echo "CUDA library folders (LD_LIBRARY_PATH): ${cuda_path:-none found}"
  local d
  for d in ${cuda_path//:/ }; do ls "$d" | grep -E '^lib(cudnn|cublas|cudart)[^_]*\.so' | sed "s|^|  $d/|"; done
  [ -n "$prebuilt" ] && { echo "bundle:"; cat "$prebuilt/MANIFEST" 2>/dev/null; }
  echo "ldd $(prog vapo-serve):"
  ldd "$(prog vapo-serve)" 2>&1
  echo "vapo-serve --version: $("$(prog vapo-serve)" --version 2>&1)"
}
nstep=1
log=$work/logs/01-environment.log
environment >"$log" 2>&1
cat "$log"
missing=$(grep -c 'not found' <(ldd "$(prog vapo-serve)" 2>&1) || true)
if [ -z "$prebuilt" ] || [ "$missing" = 0 ]; then
  row environment ok 0 "${gpu:-no GPU}; python ${py:-none}; cuDNN/cuBLAS from ${cuda_path:-nowhere}"
else
  row environment FAIL 0 "$missing libraries not found by ldd (see logs/01-environment.log)"
fi

# ---- fallback: build here --------------------------------------------------------------
if [ -z "$prebuilt" ]; then
  run configure 120 -- cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DVAPO_CUDA=ON
  if [ "$rc" = 0 ] && grep -q 'vapo: ✓ CUDA' "$log"; then row configure ok $secs "$(grep 'vapo: ✓ CUDA' "$log" | cut -c1-200)"
  else row configure "$([ $device = cpu ] && echo skip || echo FAIL)" $secs "CUDA backend not enabled: $(verdict)"; fi
  run build 300 -- cmake --build "$build" -j"$(nproc)" --target vapo-train vapo-sample vapo-serve test_backend_ops \
    train_step_parity test_ode_batch test_conv_select make-test-model bench_train_step bench_sample
  [ "$rc" = 0 ] && row build ok $secs "" || row build FAIL $secs "$(verdict)"
fi

# ---- parity: CPU vs CUDA ----------------------------------------------------------------
no_gpu() { row "$1" skip 0 "no CUDA device"; }
parity() { # NAME CAP: runs test NAME from the tests folder, requiring CUDA
  local name=$1 cap=$2 dir=$root/tests
  [ -d "$dir" ] || dir=$work
  if [ $has_gpu = 0 ]; then no_gpu "$name"; return; fi
  run "$name" "$cap" -- env -C "$dir" VAPO_TEST_REQUIRE_CUDA=1 VAPO_CUDA_VERBOSE=1 "$(prog "$name")"
  local summary
  summary=$(grep -E 'checks,|check\(s\)|all checks|passed|failed' "$log" | tail -1 | cut -c1-150)
  local cnhw nchw warn
  cnhw=$(grep -c 'CNHW-strided layout' "$log") nchw=$(grep -c 'NCHW-copy layout' "$log") warn=$(grep -c 'warning: conv' "$log")
  [ $((cnhw + nchw)) -gt 0 ] && summary+="; cuDNN choices: $cnhw CNHW, $nchw NCHW-copy, $warn cuDNN warnings"
  [ "$rc" = 0 ] && row "$name" ok $secs "$summary" || row "$name" FAIL $secs "$(verdict) ${summary}"
}
parity test_conv_select 20
parity test_backend_ops 90
parity train_step_parity 120
parity test_ode_batch 90

# ---- benchmarks -------------------------------------------------------------------------
# train_keep: seconds kept for the training leg while benchmarks run
train_keep=0
[ $train_leg = 1 ] && train_keep=$((budget / 4))
if [ $device = cpu ]; then
  presets="tiny:4" steps=2 warmup=1 n_sample=2 clients=2 rounds=1 energy=5 threads=1 modes=own
  serve_extra=(--solver euler --steps 4)
else
  presets="fmnist-small:64 cifar10:256" steps=10 warmup=3 n_sample=256 clients=32,64 rounds=4 energy=50 threads=0 modes=both
  serve_extra=()
fi
res() { grep "^RESULT name=$1 " "$log" 2>/dev/null | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "?" }'; }
declare -A speed=() text=()

# bench NAME CAP RESULT KIND REF -- CMD: one benchmark run and its row; KIND is
# train (ms_per_step) or sample/serve (images_per_s); REF a vapo row to compare.
bench() {
  local name=$1 cap=$2 result=$3 kind=$4 ref=$5 st
  shift 5
  if [ $active = 0 ]; then no_gpu "$name"; return; fi
  run "$name" "$cap" "$train_keep" "$@"
  bench_row "$name" "$result" "$kind" "$ref"
}
# bench_row NAME RESULT KIND REF: a row from the last log's RESULT line
bench_row() {
  local name=$1 result=$2 kind=$3 ref=$4 st v
  st=$(res "$result" status)
  if [ "$st" = failed ]; then
    row "$name" n/a $secs "$(grep "^RESULT name=$result " "$log" | tail -1 | sed -n 's/.* reason=//p' | cut -c1-160)"
    return
  fi
  if [ "$st" != ok ]; then
    if [ "$rc" = skip ]; then row "$name" skip 0 "budget spent"
    elif [ $device = cpu ] && { [ "$rc" = 124 ] || [ "$rc" = 137 ]; }; then row "$name" skip $secs "$(verdict) (CPU dry run)"
    elif [[ $result == torch-* ]]; then row "$name" n/a $secs "the PyTorch reference did not run: $(verdict)"
    else row "$name" FAIL $secs "$(verdict)"; fi
    return
  fi
  if [ "$kind" = train ]; then
    v=$(res "$result" ms_per_step)
    speed[$name]=$(awk -v ms="$v" 'BEGIN { if (ms > 0) print 1000 / ms; else print 0 }')
    text[$name]="$v ms/step"
  else
    v=$(res "$result" images_per_s)
    speed[$name]=$v
    text[$name]="$v images/s$([ "$kind" = sample ] && echo ", NFE $(res "$result" mean_nfe)")"
  fi
  local r=""
  [ -n "$ref" ] && r=$(ratio "${speed[$ref]:-0}" "${speed[$name]}")
  row "$name" ok $secs "${text[$name]}${r:+; vapo ($ref) / this: ${r}x}"
  [ -n "$ref" ] && btable+=("| $name | ${text[$ref]:-?} | ${text[$name]} | ${r}x |")
  return 0
}

tt=() # bench_train_torch.py for preset p, batch b
torch_train() { tt=("$py" "$pydir/bench_train_torch.py" --device "$device" --preset "$1" --batch "$2" --steps $steps
  --warmup $warmup --estimator pathwise); }
tb=$(prog bench_train_step)
for pb in $presets; do # the training step: vapo, PyTorch eager
  p=${pb%:*} b=${pb#*:}
  bench "train-$p-vapo" 60 vapo-train train "" -- "$tb" "$p" "$b" $steps "$device" $threads $warmup
  torch_train "$p" "$b"
  [ -n "$py" ] && bench "train-$p-torch-eager" 90 torch-train-eager train "train-$p-vapo" -- "${tt[@]}" --mode eager
done
# sampling: the bundled model, vapo (per-sample steps; one shared step) vs PyTorch
bench sample-fmnist-vapo 90 vapo-rk45 sample "" -- "$(prog bench_sample)" "$model" $n_sample 1e-3 $threads "$device" $modes
[ $active = 1 ] && [ $modes = both ] && [ "$rc" = 0 ] && bench_row sample-fmnist-vapo-shared vapo-rk45-shared sample ""
if [ -n "$py" ]; then # the batched on-GPU RK45 first: SciPy may be slow, or absent
  torch_sample=("$py" "$pydir/bench_sample_torch.py" "$model" $n_sample 1e-3 --device "$device" --solver)
  bench sample-fmnist-torch-batched 90 torch-rk45-batched sample sample-fmnist-vapo -- "${torch_sample[@]}" batched
  if ! "$py" -c 'import scipy' 2>/dev/null; then row sample-fmnist-scipy skip 0 "$py has no scipy"
  else bench sample-fmnist-scipy 120 torch-rk45-scipy sample sample-fmnist-vapo -- "${torch_sample[@]}" scipy; fi
fi
# serving: vapo-serve on the device, concurrent clients asking for one image each
if [ -n "$py" ] || command -v python3 >/dev/null; then
  bench serve-vapo 90 serve-c${clients##*,} serve "" -- "${py:-python3}" "$pydir/serve_bench.py" "$model" \
    --serve "$(prog vapo-serve)" --device "$device" --clients $clients --rounds $rounds --energy-requests $energy --threads $threads \
    ${serve_extra[@]+"${serve_extra[@]}"}
fi
# the layout rule (kernels/conv_select.h): the largest preset with NCHW copies forced
if [ $device = cuda ]; then
  pb=${presets##* } p=${pb%:*} b=${pb#*:}
  bench "train-$p-vapo-nchw" 60 vapo-train train "train-$p-vapo" -- \
    env VAPO_CUDA_CONV_LAYOUT=nchw "$tb" "$p" "$b" $steps cuda 0 $warmup
fi
# what may take long or not work: torch.compile, TF32
if [ -n "$py" ] && [ $device = cuda ]; then
  for pb in $presets; do
    p=${pb%:*} b=${pb#*:}
    torch_train "$p" "$b"
    bench "train-$p-torch-compile" 150 torch-train-compile train "train-$p-vapo" -- "${tt[@]}" --mode compile
  done
  bench "train-$p-torch-tf32" 60 torch-train-eager train "train-$p-vapo" -- "${tt[@]}" --mode eager --tf32
fi

# ---- the training leg: the bundled model's recipe with the time left ---------------------
train_for() { # SECONDS STEPS EVERY PRESET: vapo-train in the background, packed every minute, stopped in time
  local secs_for=$1 nsteps=$2 every=$3 preset=$4 pid t_end
  mkdir -p "$work/train"
  nstep=$((nstep + 1))
  log=$work/logs/$(printf '%02d' $nstep)-train.log
  local cmd=("$(prog vapo-train)" --device "$device" --threads $threads --data "fashion-mnist:$data" --preset "$preset" --steps "$nsteps"
    --time-tilt -2 --warmup 200 --lr 2e-3 --lr-schedule cosine --save-every "$every" --sample-every "$every"
    --keep 1 --log-every 25 --calib "$calib" --grid "$grid" --out "$work/train")
  echo "\$ ${cmd[*]}" >"$log"
  local t
  t=$(now)
  "${cmd[@]}" >>"$log" 2>&1 &
  pid=$!
  t_end=$(($(now) + secs_for))
  while kill -0 $pid 2>/dev/null && [ "$(now)" -lt $t_end ]; do
    local i
    for i in $(seq 60); do kill -0 $pid 2>/dev/null && [ "$(now)" -lt $t_end ] && sleep 1; done
    write_summary
    pack
  done
  if kill -0 $pid 2>/dev/null; then
    kill -TERM $pid # vapo-train saves a checkpoint, then exits
    for i in $(seq 20); do kill -0 $pid 2>/dev/null && sleep 0.5; done
    kill -KILL $pid 2>/dev/null
  fi
  wait $pid
  rc=$? secs=$(($(now) - t))
}
if [ $train_leg = 0 ]; then
  row train skip 0 "--no-train"
elif [ $active = 0 ]; then
  no_gpu train
elif [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  row train skip 0 "no dataset at $data"
else
  tl=$(($(left) - reserve - 25)) # 25 s: vapo-train's end (calibration, last grid) after SIGTERM
  if [ $tl -lt 20 ]; then
    row train skip 0 "budget spent (${tl}s left)"
  else
    if [ $device = cpu ]; then
      preset=fmnist-small rate=1 calib=20 grid=4
    else # steps/s of fmnist-small measured above, with a margin for grids and checkpoints
      preset=fmnist-small calib=500 grid=64
      rate=$(awk -v s="${speed[train-fmnist-small-vapo]:-0}" 'BEGIN { r = int(s * 0.8); print r > 0 ? r : 1 }')
    fi
    nsteps=$((rate * tl)) every=$((rate * 60))
    [ $nsteps -gt 6000 ] && nsteps=6000
    [ $nsteps -lt 1 ] && nsteps=1
    [ $every -lt 1 ] && every=1
    train_for $tl $nsteps $every $preset
    last=$(grep -ohE '"step": *[0-9]+|interrupted at step [0-9]+' "$work"/train/*.jsonl "$log" 2>/dev/null |
      grep -oE '[0-9]+$' | sort -n | tail -1)
    ckpt=$(ls -t "$work"/train/*.safetensors 2>/dev/null | head -1)
    if [ -n "$ckpt" ]; then
      row train ok $secs "$preset, ${last:-?} of $nsteps steps (rate $rate steps/s planned), rc $rc; newest: ${ckpt##*/}"
    else
      row train FAIL $secs "rc=$rc, no checkpoint: $(tail -1 "$log" | cut -c1-160)"
    fi
  fi
fi

echo
echo "== summary ($(($(now) - t0)) s of $budget; $out/summary.md, $out/gpu_check.tar.gz)"
printf '%s\n' "${rows[@]}"
exit $status
