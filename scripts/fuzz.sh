#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz) with clang under ASan + UBSan and
# runs each for a while, starting from the committed seed corpora.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   build, then run each target SECONDS (default 10)
#   scripts/fuzz.sh --build-only             build only
#   scripts/fuzz.sh --no-build SECONDS T...  run only (ctest: after the fuzz_build test)
#
# Targets: png b64 json opt ckpt generate interpolate energy (default: all).
# Build folder: $VAPO_FUZZ_BUILD (default build-fuzz). New inputs go to
# BUILD/fuzz/corpus/TARGET (the committed corpus is only read); a crash is kept
# as BUILD/fuzz/crashes/TARGET-crash-<sha1> and the script exits 1 naming it
# and the command that replays it. Exit 77 (skipped) when clang or libFuzzer
# is missing: scripts/setup.sh installs them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${VAPO_FUZZ_BUILD:-$root/build-fuzz}
all=(png b64 json opt ckpt generate interpolate energy)

do_build=1 do_run=1
case "${1:-}" in
  --build-only) do_run=0; shift ;;
  --no-build) do_build=0; shift ;;
esac
seconds=${1:-10}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

# libFuzzer's runtime ships with clang's compiler-rt (Debian: libclang-rt-*-dev).
have_libfuzzer() {
  command -v clang >/dev/null || return 1
  local t; t=$(mktemp -d)
  echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' >"$t/t.c"
  clang -fsanitize=fuzzer,address,undefined "$t/t.c" -o "$t/t" 2>/dev/null
  local rc=$?
  rm -rf "$t"
  return $rc
}
if ! have_libfuzzer; then
  echo "fuzz: SKIPPED: clang with libFuzzer (-fsanitize=fuzzer) not found; bash scripts/setup.sh installs it"
  exit 77
fi

if [ $do_build = 1 ]; then
  CC=clang cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DVAPO_FUZZ=ON -DVAPO_CUDA=OFF >/dev/null
  cmake --build "$build" --target fuzz_all -j"$(nproc)"
fi
[ $do_run = 1 ] || exit 0

# Leaks count as failures; a slow input (> 10 s) is a hang.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1
failed=()
for t in "${targets[@]}"; do
  bin=$build/fuzz/fuzz_$t
  [ -x "$bin" ] || { echo "fuzz: $bin not built (unknown target '$t'?)"; exit 1; }
  work=$build/fuzz/corpus/$t crashes=$build/fuzz/crashes
  mkdir -p "$work" "$crashes"
  opts=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1 -artifact_prefix="$crashes/$t-")
  # the JSON routes take up to 8 KiB (routes_body_limit)
  case $t in generate | interpolate | energy) opts+=(-dict="$root/tests/fuzz/request.dict" -max_len=16384) ;; esac
  log=$build/fuzz/$t.log
  echo "fuzz: $t for ${seconds}s (log $log)"
  if "$bin" "${opts[@]}" "$work" "$root/tests/fuzz/corpus/$t" >"$log" 2>&1; then
    # the last status line: "#N DONE cov: C ft: F corp: ..."
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed "s/^/fuzz: $t: /"
  else
    failed+=("$t")
    grep -E 'ERROR|SUMMARY|^fuzz_|Test unit written' "$log" | head -20 | sed "s/^/fuzz: $t: /"
    echo "fuzz: $t FAILED; replay: $bin $crashes/$t-crash-* (full log: $log)"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${seconds}s each without a crash"
