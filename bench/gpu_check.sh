#!/usr/bin/env bash
# The GPU machine's check, in one command: configure and build (Release,
# CUDA on) in build-gpu/, run the CPU-vs-CUDA parity test verbosely (it must
# not skip here), run every test with ctest, run the GPU benchmarks against
# PyTorch (training step, RK45 sampling), then print a short table and write
# $build/gpu_check/summary.md (and $OUT/summary.md with the logs when $OUT is
# set). Budget: well under 8 minutes on an H200 with 16 cores (the build is
# ~1-2 minutes of that); benchmarks that would run past the budget are
# skipped. Exit status: 0 only if the CUDA backend was built and every step
# passed (a PyTorch reference that cannot run, or a torch.compile that fails,
# does not count against vapo: its row says skip or n/a).
#
#   bench/gpu_check.sh              # from anywhere in the checkout
#   BUILD_DIR=/tmp/b bench/gpu_check.sh
#   VAPO_GPU_CHECK_SKIP_TESTS=1     build only the benchmark programs; no parity, no ctest
#   VAPO_GPU_CHECK_BUDGET=420       seconds for the whole script
#   PYTHON=/path/to/python3         the interpreter with torch (default: the first that imports it)
#   JOBS=N                          build parallelism (default: all cores)
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 4)}
logs=$build/gpu_check
skip_tests=${VAPO_GPU_CHECK_SKIP_TESTS:-0}
mkdir -p "$logs"

declare -a rows=()
status=0
# row NAME ok|FAIL|skip|n/a SECONDS DETAIL; skip and n/a (a reference that cannot run) do not fail the script
row() {
  rows+=("$(printf '%-34s %-6s %6ss  %s' "$1" "$2" "$3" "$4")")
  case $2 in ok | skip | n/a) ;; *) status=1 ;; esac
}
now() { date +%s; }
t_start=$(now)

echo "== device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
else
  echo "nvidia-smi not found"
fi

# ---- configure + build ----------------------------------------------------------
echo "== configure ($build)"
t=$(now)
if cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DVAPO_CUDA=ON >"$logs/configure.log" 2>&1; then
  grep 'vapo:' "$logs/configure.log"
  if grep -q 'vapo: ✓ CUDA' "$logs/configure.log"; then
    row configure ok $(($(now) - t)) "CUDA backend enabled"
  else
    row configure FAIL $(($(now) - t)) "CUDA backend NOT enabled (see $logs/configure.log)"
  fi
else
  tail -20 "$logs/configure.log"
  row configure FAIL $(($(now) - t)) "see $logs/configure.log"
fi

echo "== build (-j$jobs)"
t=$(now)
targets=()
[ "$skip_tests" = 1 ] && targets=(--target bench_train_step bench_sample bench_net make-test-model)
if cmake --build "$build" -j"$jobs" ${targets[@]+"${targets[@]}"} >"$logs/build.log" 2>&1; then
  warnings=$(grep -c 'warning' "$logs/build.log" || true)
  row build ok $(($(now) - t)) "$warnings compiler warning line(s), see $logs/build.log"
else
  grep -E 'error|Error' "$logs/build.log" | head -20
  row build FAIL $(($(now) - t)) "see $logs/build.log"
fi

# ---- parity: every backend op, CPU vs CUDA --------------------------------------
echo "== parity (tests/test_backend_ops)"
t=$(now)
parity=$build/tests/test_backend_ops
if [ "$skip_tests" = 1 ]; then
  row parity skip 0 "VAPO_GPU_CHECK_SKIP_TESTS=1"
elif [ -x "$parity" ]; then
  # VAPO_CUDA_VERBOSE: the device, and per convolution shape whether cuDNN
  # took the strided CNHW layout or needed NCHW copies, with cudnnFind times.
  (cd "$root/tests" && VAPO_TEST_REQUIRE_CUDA=1 VAPO_CUDA_VERBOSE=1 timeout 180 "$parity") \
    >"$logs/parity.log" 2>&1
  rc=$?
  grep -E '^vapo: CUDA device|FAIL|skipped|worst|checks,' "$logs/parity.log"
  echo "-- cuDNN layout choices (k=3 convolutions):"
  grep -E '^vapo: conv ' "$logs/parity.log" | sed 's/^vapo: /   /' | sort -u | head -60
  summary=$(grep 'checks,' "$logs/parity.log" | tail -1)
  [ $rc -eq 0 ] && row parity ok $(($(now) - t)) "$summary" \
                || row parity FAIL $(($(now) - t)) "rc=$rc ${summary:-no summary}, see $logs/parity.log"
else
  row parity FAIL 0 "$parity was not built"
fi

# ---- every test ------------------------------------------------------------------
echo "== ctest"
t=$(now)
if [ "$skip_tests" = 1 ]; then
  row ctest skip 0 "VAPO_GPU_CHECK_SKIP_TESTS=1"
elif [ -f "$build/CTestTestfile.cmake" ]; then
  (cd "$build" && VAPO_TEST_REQUIRE_CUDA=1 timeout 300 ctest --output-on-failure --timeout 240 -j4) \
    >"$logs/ctest.log" 2>&1
  rc=$?
  grep -E 'Test +#[0-9]+:' "$logs/ctest.log" |
    sed -E 's/^ *[0-9]+\/[0-9]+ +Test +#[0-9]+: +([^ ]+) +[.*]* *(.*)$/\1|\2/' |
    awk -F'|' '{printf "   %-40s %s\n", $1, $2}'
  summary=$(grep -E 'tests passed' "$logs/ctest.log" | tail -1)
  [ $rc -eq 0 ] && row ctest ok $(($(now) - t)) "$summary" \
                || row ctest FAIL $(($(now) - t)) "rc=$rc ${summary:-}, see $logs/ctest.log"
else
  row ctest FAIL 0 "no CTestTestfile.cmake"
fi

# ==== GPU benchmarks: vapo against PyTorch on the same GPU ===========================
# Each program runs under `timeout` (capped by what is left of the budget), logs
# to "$logs/<name>.log" and ends with RESULT lines (vapo's bench programs and
# the bench_*_torch.py scripts print them); each measurement gets one `row`,
# and a PyTorch row carries vapo's speed-up against it (> 1: vapo is faster).
# "+N MiB GPU" is the peak of nvidia-smi's device total during the run above
# what was in use before it (CUDA context and allocator caches included).
# Sampling runs on two models: a cifar10-sized one with random weights
# (make-test-model, ReZero scales 0.1 so that the blocks do work; NFE depends on
# the weights: about 20 at rtol 1e-3, a nearly straight flow, so this row
# measures the cost of the evaluations) and the bundled trained fmnist-small
# checkpoint (a real flow, NFE about 56, on a small network: this row measures
# the solvers' overheads). vapo draws its noise with its own RNG, PyTorch with
# torch's: same law, other numbers. Float32 on both sides (vapo's CUDA backend
# has no TF32); one extra PyTorch row allows TF32, PyTorch's default for convolutions.
# VAPO_GPU_CHECK_DEVICE=cpu with a small VAPO_GPU_CHECK_PRESET, _BATCH and _N is a
# dry run of this section (and of its parsing) on a machine without a GPU.
budget=${VAPO_GPU_CHECK_BUDGET:-420} device=${VAPO_GPU_CHECK_DEVICE:-cuda}
preset=${VAPO_GPU_CHECK_PRESET:-cifar10} batch=${VAPO_GPU_CHECK_BATCH:-256} n_sample=${VAPO_GPU_CHECK_N:-256}
steps=5 warmup=2 tol=1e-3
rand_model=$logs/$preset-random.safetensors fm_model=$root/models/fmnist-small.safetensors
bin=$build/bench
declare -A val=() # per row: .text (the headline or why it failed) and .ratio

gpu_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | grep -E '^[0-9]+$'; }

# run_bench NAME LIMIT CMD...: CMD under timeout into $logs/NAME.log. Sets log
# (NAME), rc ("skip" when the budget is spent), secs, limit, mem (peak MiB or "?").
run_bench() {
  local left=$((budget - ($(now) - t_start) - 10)) watcher="" base t
  log=$1 limit=$2 mem="?" secs=0
  shift 2
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 20 ]; then rc=skip; return; fi
  echo "-- $log (at most ${limit}s)"
  base=$(gpu_mem)
  if [ -n "$base" ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 200 >"$logs/$log.mem" 2>/dev/null &
    watcher=$!
  fi
  t=$(now)
  timeout -k 10 "$limit" "$@" >"$logs/$log.log" 2>&1
  rc=$? secs=$(($(now) - t))
  if [ -n "$watcher" ]; then
    kill "$watcher" 2>/dev/null
    wait "$watcher" 2>/dev/null
    mem=$(grep -E '^[0-9]+$' "$logs/$log.mem" | sort -n | tail -1)
    mem=$((${mem:-$base} - base))
  fi
  grep -E '^(vapo|torch|compile|func|cannot|error)' "$logs/$log.log" | sed 's/^/   /'
}

# res RESULT KEY: KEY in the last line "RESULT name=RESULT ..." of the last run's log
res() { grep "^RESULT name=$1 " "$logs/$log.log" 2>/dev/null | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "?" }'; }
num() { awk -v x="$1" 'BEGIN { printf "%.4g", x }'; }
gpu_text() { [ "$mem" = "?" ] || printf ', +%s MiB GPU' "$mem"; }

# judge RESULT: "ok", "n/a" (the run said status=failed: torch.compile), or why
# it failed. A RESULT line counts even when a later part of the run failed.
judge() {
  case $rc:$(res "$1" status) in
    skip:*) echo "skip" ;;
    *:ok) echo ok ;;
    *:failed) echo "n/a" ;;
    0:*) echo "no RESULT line" ;;
    124:* | 137:*) echo "timeout after ${limit}s; last: $(grep -v '^RESULT' "$logs/$log.log" | tail -1 | cut -c1-100)" ;;
    *) echo "rc=$rc: $(grep -v '^RESULT' "$logs/$log.log" | tail -1 | cut -c1-120)" ;;
  esac
}

# bench_row ROW RESULT train|sample [REF]: one row from the last run's RESULT
# line; REF is the vapo row whose speed is divided by this one's. fail_as=n/a makes a
# failure not count against vapo (torch.compile). Keeps the row's text and
# ratio in val[ROW.text], val[ROW.ratio] for summary.md.
bench_row() {
  local row_name=$1 result=$2 kind=$3 ref=${4:-} verdict text=""
  verdict=$(judge "$result")
  case $verdict in
    ok) "${kind}_text" "$row_name" "$result" # sets text and val[ROW.speed]
        [ -n "$ref" ] && val[$row_name.ratio]=$(ratio "${val[$ref.speed]:-0}" "${val[$row_name.speed]}")
        row "$row_name" ok "$secs" "$text${val[$row_name.ratio]:+; speed of vapo / this: ${val[$row_name.ratio]}x}" ;;
    n/a) text="failed: $(grep "^RESULT name=$result " "$logs/$log.log" | tail -1 | sed -n 's/.* reason=//p' | cut -c1-200)"
         row "$row_name" n/a "$secs" "$text" ;;
    skip) text="skipped: time budget spent"; row "$row_name" skip 0 "$text" ;;
    *) text="FAIL: $verdict"; row "$row_name" "${fail_as:-FAIL}" "$secs" "$verdict (see $logs/$log.log)" ;;
  esac
  val[$row_name.text]=$text
}

# ROW RESULT: set bench_row's text and val[ROW.speed] (per second: steps or images)
train_text() {
  local ms; ms=$(res "$2" ms_per_step)
  val[$1.speed]=$(awk -v ms="$ms" 'BEGIN { if (ms > 0) print 1000 / ms; else print 0 }')
  text="$(num "$ms") ms/step$(gpu_text)"
  [ "$2" = torch-train-compile ] && text+=" (compiled: $(res "$2" compiled), in $(res "$2" compile_s) s)"
  return 0
}

sample_text() {
  val[$1.speed]=$(res "$2" images_per_s)
  text="$(num "${val[$1.speed]}") images/s, mean NFE $(num "$(res "$2" mean_nfe)")$(gpu_text)"
}

pick_python() { # $PYTHON, or the first interpreter that imports torch
  local p
  for p in ${PYTHON:-python3 /usr/bin/python3}; do
    if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then echo "$p"; return; fi
  done
}

# sample_pair TAG MODEL: vapo (the backend solver; per-sample steps, then one step
# shared by the batch as SciPy takes), then PyTorch: SciPy on the flattened batch
# (the paper's way) and the batched on-GPU RK45; ratios against vapo's per-sample steps
sample_pair() {
  local tag=$1 model=$2 solvers=batched
  run_bench "sample-$tag-vapo" 120 "$bin/bench_sample" "$model" $n_sample $tol 0 $device both
  bench_row "sample-$tag-vapo" vapo-rk45 sample
  bench_row "sample-$tag-vapo-shared" vapo-rk45-shared sample
  if [ -z "$py" ]; then
    row "sample-$tag-torch" skip 0 "no python3 with torch"
    return
  fi
  [ $scipy = 1 ] && solvers=scipy,batched
  run_bench "sample-$tag-torch" 150 "$py" "$root/bench/bench_sample_torch.py" "$model" $n_sample $tol \
    --device $device --solver $solvers
  [ $scipy = 1 ] && bench_row "sample-$tag-scipy" torch-rk45-scipy sample "sample-$tag-vapo"
  bench_row "sample-$tag-batched" torch-rk45-batched sample "sample-$tag-vapo"
}

echo "== GPU benchmarks ($preset, batch $batch; sampling $n_sample images, rtol=atol=$tol; on $device)"
py=$(pick_python)
scipy=0
if [ -z "$py" ]; then
  echo "no python3 with torch: the PyTorch references are skipped"
elif "$py" -c 'import scipy' 2>/dev/null; then
  scipy=1
else
  echo "$py has no scipy: the paper's sampling (solve_ivp) is skipped"
fi
torch_train=("$py" "$root/bench/bench_train_torch.py" --device $device --preset $preset --batch $batch
  --steps $steps --warmup $warmup --estimator pathwise)
# most important first: what is left when the budget runs out is skipped
run_bench train-vapo 120 "$bin/bench_train_step" $preset $batch $steps $device 0 $warmup
bench_row train-vapo vapo-train train
if [ -n "$py" ]; then
  run_bench train-torch-eager 150 "${torch_train[@]}" --mode eager
  bench_row train-torch-eager torch-train-eager train train-vapo
else
  row train-torch skip 0 "no python3 with torch"
fi
run_bench make-model 60 "$build/tests/make-test-model" "$rand_model" --preset $preset --seed 7 --scale 0.1 --no-calib
if [ "$rc" = 0 ]; then
  sample_pair $preset "$rand_model"
else
  row sample-$preset FAIL "$secs" "make-test-model failed (see $logs/make-model.log)"
fi
sample_pair fmnist "$fm_model"
if [ -n "$py" ]; then
  run_bench train-torch-tf32 120 "${torch_train[@]}" --mode eager --tf32
  bench_row train-torch-tf32 torch-train-eager train train-vapo
  run_bench train-torch-compile 240 "${torch_train[@]}" --mode compile
  fail_as=n/a bench_row train-torch-compile torch-train-compile train train-vapo
fi

# ---- summary.md: the GPU, the versions and the benchmarks, for BENCHMARKS.md ---------
table() {
  printf '%-34s %-6s %7s  %s\n' step result time detail
  for r in "${rows[@]}"; do echo "$r"; done
}

# trow LABEL VAPO-ROW TORCH-LABEL TORCH-ROW [GOAL]: a table line; with VAPO-ROW ""
# the ratio is the one bench_row took
trow() {
  local ours="" goal=${5:+ (goal $5)} r=${val[$4.ratio]:-?}
  if [ -n "$2" ]; then
    ours=${val[$2.text]:-not run}
    r=$(ratio "${val[$2.speed]:-0}" "${val[$4.speed]:-0}")
  fi
  printf '| %s | %s | %s: %s | %s×%s |\n' "$1" "$ours" "$3" "${val[$4.text]:-not run}" "$r" "$goal"
}

versions() {
  local nvcc inc cudnn env
  nvcc=$(sed -n 's/^CMAKE_CUDA_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null)
  inc=$(sed -n 's/^CUDNN_INCLUDE_DIR:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null)
  cudnn=$(awk '/#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) / { printf "%s%s", s, $3; s = "." }' "$inc/cudnn_version.h" 2>/dev/null)
  env=$(cat "$logs"/train-torch-eager.log "$logs"/sample-*-torch.log 2>/dev/null | grep -m1 '^ENV ' | cut -c5-)
  printf 'vapo %s built with CUDA %s and cuDNN %s; PyTorch side: %s' \
    "$(git -C "$root" describe --always --dirty 2>/dev/null)" \
    "$(${nvcc:-nvcc} --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')" "${cudnn:-?}" "${env:-not run}"
}

write_summary() {
  local gpu
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i 0 2>/dev/null)
  echo "## GPU: ${gpu:-no GPU found}"
  echo
  echo "\`bench/gpu_check.sh\` of $(date -u '+%Y-%m-%d %H:%M UTC'): ${gpu:-no GPU} (name, driver, memory), $(nproc) CPU cores;"
  echo "$(versions). Float32 on both sides unless a row says TF32; PyTorch's training step uses the"
  echo "same loss (pathwise estimator) and a Lamb with clipping and EMA (\`bench/vapo_torch.py\`). Speed-up: vapo's"
  echo "speed over PyTorch's (> 1: vapo is faster). Sampling: RK45, rtol = atol = $tol, T = 1.5, $n_sample images;"
  echo "the $preset model has random weights (ReZero scales 0.1), fmnist-small is the bundled trained checkpoint."
  echo
  echo "| benchmark | vapo | PyTorch | vapo speed-up |"
  echo "| --- | --- | --- | --- |"
  trow "training step, $preset, batch $batch" train-vapo "eager" train-torch-eager "1.5×"
  trow "training step, PyTorch with TF32" "" "eager, TF32" train-torch-tf32
  trow "training step, torch.compile" "" "torch.compile" train-torch-compile
  local tag
  for tag in $preset fmnist; do
    trow "RK45 sampling, $tag" "sample-$tag-vapo" "SciPy solve_ivp on the flattened batch (the paper's way)" \
      "sample-$tag-scipy" "3×"
    trow "RK45 sampling, $tag" "" "batched on-GPU RK45, per-sample steps" "sample-$tag-batched"
    trow "RK45 sampling, $tag, vapo with one shared step" "sample-$tag-vapo-shared" "SciPy, as above" \
      "sample-$tag-scipy"
  done
  echo
  echo '```'
  table
  echo '```'
}

write_summary >"$logs/summary.md"
if [ -n "${OUT:-}" ]; then # the device tool brings back what is under $OUT
  mkdir -p "$OUT/gpu_check"
  cp "$logs/summary.md" "$OUT/summary.md"
  cp "$logs"/*.log "$OUT/gpu_check/" 2>/dev/null
fi

echo
echo "== summary ($(($(now) - t_start)) s; $logs/summary.md)"
table
exit $status
