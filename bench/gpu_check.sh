#!/usr/bin/env bash
# The GPU machine's check, in one command: configure and build (Release,
# CUDA on) in build-gpu/, run the CPU-vs-CUDA parity test verbosely (it must
# not skip here), run every test with ctest, then print a short table.
# Budget: well under 8 minutes on an H200 with 16 cores (the build is ~1-2
# minutes of that). Exit status: 0 only if the CUDA backend was built and
# every step passed.
#
#   bench/gpu_check.sh              # from anywhere in the checkout
#   BUILD_DIR=/tmp/b bench/gpu_check.sh
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
jobs=$(nproc 2>/dev/null || echo 4)
logs=$build/gpu_check
mkdir -p "$logs"

declare -a rows=()
status=0
row() { rows+=("$(printf '%-34s %-6s %6ss  %s' "$1" "$2" "$3" "$4")"); [ "$2" = ok ] || status=1; }
now() { date +%s; }

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
if cmake --build "$build" -j"$jobs" >"$logs/build.log" 2>&1; then
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
if [ -x "$parity" ]; then
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
if [ -f "$build/CTestTestfile.cmake" ]; then
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

# ==== GPU benchmarks: the lead adds benchmark programs here ========================
# Each benchmark: run it under `timeout`, save its output in "$logs/<name>.log",
# and add one table line with `row <name> ok|FAIL <seconds> "<headline number>"`.
# Keep the whole script under 8 minutes on an H200.
# ====================================================================================

echo
echo "== summary"
printf '%-34s %-6s %7s  %s\n' step result time detail
for r in "${rows[@]}"; do echo "$r"; done
exit $status
