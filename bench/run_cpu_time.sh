#!/usr/bin/env bash
# CPU seconds per training step and per sampled image, vapo against PyTorch,
# one thread each, for a machine too busy for wall-clock ratios: each program
# runs twice with different amounts of work and the difference of its CPU time
# (user + system, /usr/bin/time) is divided by the difference of work, so
# start-up (imports, model loading) cancels out. Step: run_train_bench.sh's
# pair (vapo-train, score estimator, paper's network; bench_train_torch.py).
# Sampling: RK45 shared step (bench_sample) against SciPy (bench_sample_torch.py).
#   bench/run_cpu_time.sh [steps_lo] [steps_hi] [n_lo] [n_hi]   (after a Release build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
slo=${1:-2} shi=${2:-8} nlo=${3:-4} nhi=${4:-16}
export OMP_WAIT_POLICY=passive
model=models/fmnist-small.safetensors
out=$(mktemp -d)
cpu() { /usr/bin/time -f "%U %S" -o "$out/t" "$@" >/dev/null 2>&1; awk '{print $1 + $2}' "$out/t"; }
vtrain() { cpu build/vapo-train --device cpu --steps "$1" --batch 64 --threads 1 --estimator score --quadratic 0 --heads last \
  --global-head 0 --out "$out/run$1" --log-every 1 --save-every 100000 --sample-every 0 --grid 1 --calib 2 --sample-tol 1; }
ttrain() { cpu /usr/bin/python3 bench/bench_train_torch.py --steps "$1" --batch 64 --threads 1 --warmup 1; }
vsample() { cpu build/bench/bench_sample "$model" "$1" 1e-3 1 cpu shared; }
tsample() { cpu /usr/bin/python3 bench/bench_sample_torch.py "$model" "$1" 1e-3 1; }
per() { /usr/bin/python3 -c "print('%.3f' % (($2 - $1) / ($4 - $3)))" "$@"; }
a=$(vtrain "$slo") b=$(ttrain "$slo") c=$(vtrain "$shi") d=$(ttrain "$shi")
vs=$(per "$a" "$c" "$slo" "$shi") ts=$(per "$b" "$d" "$slo" "$shi")
e=$(vsample "$nlo") f=$(tsample "$nlo") g=$(vsample "$nhi") h=$(tsample "$nhi")
vi=$(per "$e" "$g" "$nlo" "$nhi") ti=$(per "$f" "$h" "$nlo" "$nhi")
echo "training step, CPU s/step: vapo $vs, torch $ts ($(/usr/bin/python3 -c "print('%.2f' % ($ts / $vs))")x)"
echo "RK45 sampling, CPU s/image: vapo $vi, torch+scipy $ti ($(/usr/bin/python3 -c "print('%.2f' % ($ti / $vi))")x)"
rm -rf "$out"
