#!/usr/bin/env bash
# Data-parallel scaling of vapo-train on one machine: steps/s with 1 process
# and with R ranks under mpirun (one thread per rank), same global batch,
# alternating runs so that other load on a shared machine hits both alike.
# Also the CPU seconds (user + sys, all ranks, start-up included) per step: on a
# machine busy with other work the ranks get no more cores than one process, and
# the CPU time shows what the split itself costs.
#   bench/run_mpi_bench.sh [steps] [batch] [ranks] [repeats]   (after a Release build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-15} batch=${2:-64} ranks=${3:-2} repeats=${4:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
flags=(--device cpu --preset fmnist-small --batch "$batch" --steps "$steps" --threads 1 --log-every 1 --save-every 100000
       --sample-every 0 --grid 1 --calib 2 --sample-tol 1)
rate() {  # steps/s over the whole run, from the last loss record of metrics.jsonl
  /usr/bin/python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if '\"loss\"' in l]; print('%.3f' % r[-1]['steps_per_s'])" "$1"
}
one=() many=() cpu_one=() cpu_many=()
cpu() { awk -v n="$steps" '{printf "%.2f", ($1 + $2) / n}' "$1"; }
for i in $(seq "$repeats"); do
  /usr/bin/time -f "%U %S" -o "$out/cpu" build/vapo-train "${flags[@]}" --out "$out/one$i" >/dev/null 2>&1
  one+=("$(rate "$out/one$i/metrics.jsonl")") cpu_one+=("$(cpu "$out/cpu")")
  /usr/bin/time -f "%U %S" -o "$out/cpu" mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks" -x OMP_NUM_THREADS \
    build/vapo-train "${flags[@]}" --out "$out/many$i" >/dev/null 2>&1
  many+=("$(rate "$out/many$i/metrics.jsonl")") cpu_many+=("$(cpu "$out/cpu")")
  echo "run $i: 1 process ${one[-1]} steps/s (${cpu_one[-1]} CPU s/step), $ranks ranks ${many[-1]} steps/s (${cpu_many[-1]} CPU s/step)"
done
/usr/bin/python3 - "$ranks" "${one[*]}" "${many[*]}" "${cpu_one[*]}" "${cpu_many[*]}" <<'PY'
import statistics, sys
r = int(sys.argv[1])
one, many, c1, cr = ([float(x) for x in a.split()] for a in sys.argv[2:6])
a, b = statistics.median(one), statistics.median(many)
print(f"median: 1 process {a:.3f} steps/s, {r} ranks {b:.3f} steps/s: speed-up {b / a:.2f}x, efficiency {b / a / r:.0%}")
x, y = statistics.median(c1), statistics.median(cr)
print(f"CPU s/step: 1 process {x:.2f}, {r} ranks {y:.2f} in all: work efficiency {x / y:.0%}")
PY
