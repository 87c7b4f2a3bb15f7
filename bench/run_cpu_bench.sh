#!/usr/bin/env bash
# Side-by-side CPU benchmark: vapo's network passes against the PyTorch way of
# doing the same, same preset, batch and thread count, in one run; prints ratios.
#   bench/run_cpu_bench.sh [preset] [batch] [repeats] [threads]   (after a Release build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-fmnist-small} batch=${2:-64} reps=${3:-10} threads=${4:-$(nproc)}
ours=$(build/bench/bench_net "$preset" "$batch" "$reps" "$threads")
theirs=$(/usr/bin/python3 bench/bench_torch.py "$preset" "$batch" "$reps" "$threads")
echo "$ours"; echo "$theirs"
echo "ratio (PyTorch time / vapo time; > 1 means vapo is faster):"
for what in "forward" "forward+backward" "second-order step"; do
  a=$(echo "$ours" | grep -F "vapo $what " | awk '{print $(NF-1)}')
  b=$(echo "$theirs" | grep -F "torch $what " | awk '{print $(NF-1)}')
  awk -v w="$what" -v a="$a" -v b="$b" 'BEGIN { printf "  %-18s %.2fx\n", w, b / a }'
done
