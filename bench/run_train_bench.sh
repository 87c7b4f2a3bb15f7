#!/usr/bin/env bash
# Training throughput and peak memory: vapo-train against the same training
# step in PyTorch (bench_train_torch.py), same preset, batch, threads and loss
# (vapo-train with --estimator score, the section 3.6 loss the PyTorch loop implements,
# and the paper's network: no quadratic, one head; the pathwise estimator and
# vapo-train's default extras cost about the same, see BENCHMARKS.md).
#   bench/run_train_bench.sh [steps] [batch] [threads]   (after a Release build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-30} batch=${2:-64} threads=${3:-$(nproc)}
out=$(mktemp -d)
/usr/bin/time -f "%M" -o "$out/rss" build/vapo-train --device cpu --steps $((steps + 1)) --batch "$batch" --threads "$threads" --estimator score \
  --quadratic 0 --heads last --global-head 0 \
  --out "$out/run" --log-every 1 --save-every 100000 --sample-every 0 --grid 1 --calib 2 --sample-tol 1 >/dev/null 2>&1
rate=$(/usr/bin/python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print('%.3f' % [x for x in r if 'steps_per_s' in x][-1]['steps_per_s'])" \
  "$out/run/metrics.jsonl")  # the last loss record; includes the first, allocating step
echo "vapo training: $rate steps/s (fmnist-small, batch $batch), peak RSS $(( $(cat "$out/rss") / 1024 )) MiB"
/usr/bin/python3 bench/bench_train_torch.py "$steps" "$batch" "$threads"
rm -rf "$out"
