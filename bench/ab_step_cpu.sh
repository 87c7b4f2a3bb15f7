#!/usr/bin/env bash
# A/B of vapo-train builds on a shared machine: each round runs every binary
# at 2 and 14 steps (run_cpu_time.sh's training step: batch 64, score
# estimator, 1 thread) and prints (CPU(14) - CPU(2)) / 12, CPU s/step, in the
# order given; binaries alternate within a round, so a load change slows all.
#   bench/ab_step_cpu.sh ROUNDS VAPO_TRAIN_A VAPO_TRAIN_B [...]   (from the repo root)
set -euo pipefail
rounds=$1; shift
out=$(mktemp -d)
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1
cpu() { /usr/bin/time -f "%U %S" -o "$out/t" "$@" >/dev/null 2>&1; awk '{print $1 + $2}' "$out/t"; }
run() { cpu "$1" --device cpu --steps "$2" --batch 64 --threads 1 --estimator score --quadratic 0 --heads last \
  --global-head 0 --out "$out/run$2" --log-every 1 --save-every 100000 --sample-every 0 --grid 1 --calib 2 \
  --sample-tol 1; rm -rf "$out/run$2"; }
for r in $(seq "$rounds"); do
  line="round $r load $(cut -d' ' -f1 /proc/loadavg):"
  for b in "$@"; do
    lo=$(run "$b" 2) hi=$(run "$b" 14)
    line="$line $(python3 -c "print('%.4f' % (($hi - $lo) / 12))")"
  done
  echo "$line"
done
rm -rf "$out"
