#!/usr/bin/env bash
# vapo against PyTorch on the CPU, alternated round by round in one run so
# that a shared, drifting machine slows both sides alike (BENCHMARKS.md):
#   step:     the second-order training step (run_train_bench.sh: vapo-train
#             with the score estimator on the paper's network, vs
#             bench_train_torch.py), steps/s
#   sampling: RK45 of the bundled model, vapo's shared step (the paper's
#             flattened solve) vs PyTorch + SciPy solve_ivp, images/s
# Prints each round's ratio (vapo / PyTorch) and the median of the rounds.
#   bench/run_side_by_side.sh [rounds] [steps] [batch] [threads] [n_images]
#   (after a Release build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} steps=${2:-20} batch=${3:-64} threads=${4:-2} n=${5:-64}
model=models/fmnist-small.safetensors
export OMP_WAIT_POLICY=passive
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" | tail -1; }
step_ratios=() sample_ratios=()
for r in $(seq "$rounds"); do
  v=$(bench/run_train_bench.sh "$steps" "$batch" "$threads" 2>&1)
  vs=$(echo "$v" | sed -n 's/^vapo training: \([0-9.]*\) steps.*/\1/p')
  ts=$(echo "$v" | sed -n 's/^torch training.*: \([0-9.]*\) steps\/s.*/\1/p' | tail -1)
  vi=$(build/bench/bench_sample "$model" "$n" 1e-3 "$threads" cpu shared 2>&1 | grep '^RESULT' | field images_per_s)
  ti=$(/usr/bin/python3 bench/bench_sample_torch.py "$model" "$n" 1e-3 "$threads" 2>&1 | grep '^RESULT' | field images_per_s)
  sr=$(/usr/bin/python3 -c "print('%.2f' % ($vs / $ts))") ir=$(/usr/bin/python3 -c "print('%.2f' % ($vi / $ti))")
  step_ratios+=("$sr") sample_ratios+=("$ir")
  echo "round $r: step vapo $vs vs torch $ts steps/s (${sr}x); sampling vapo $vi vs torch+scipy $ti images/s (${ir}x)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median ratio: step $(median "${step_ratios[@]}")x, sampling $(median "${sample_ratios[@]}")x ($rounds rounds)"
