#!/usr/bin/env bash
# CPU seconds per training step and per sampled image, vapo against PyTorch,
# one thread each, for a machine too busy for wall-clock ratios: each program
# runs twice with different amounts of work and the difference of its CPU time
# (user + system, /usr/bin/time) is divided by the difference of work, so
# start-up (imports, model loading) cancels out. Step: run_train_bench.sh's
# pair (vapo-train, score estimator, paper's network; bench_train_torch.py).
# Sampling: RK45 shared step (bench_sample) against SciPy (bench_sample_torch.py)
# from the same noise (bench_sample writes it, --noise reads it); each reports
# the process CPU seconds of its solve alone (neither the start-up nor the
# timed grad-Phi loop, whose CPU time varies with the load, counts), at n_lo
# and n_hi images. The sampler pool keeps float32 states where SciPy keeps
# float64 ones, so the step counts can differ: the ratio per image and
# evaluation is the like-for-like one. ONLY=step or ONLY=sample runs one half.
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
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }  # a field of the RESULT line on stdin
vsample() { build/bench/bench_sample "$model" "$1" 1e-3 1 cpu shared "$out/noise$1" | grep '^RESULT'; }
tsample() { /usr/bin/python3 bench/bench_sample_torch.py "$model" "$1" 1e-3 1 --noise "$out/noise$1" \
  --eval-seconds 0.2 | grep '^RESULT'; }
per() { /usr/bin/python3 -c "print('%.3f' % (($2 - $1) / ($4 - $3)))" "$@"; }
ratio() { /usr/bin/python3 -c "print('%.2f' % ($1 / $2))"; }
if [ "${ONLY:-step}" = step ]; then
  a=$(vtrain "$slo") b=$(ttrain "$slo") c=$(vtrain "$shi") d=$(ttrain "$shi")
  vs=$(per "$a" "$c" "$slo" "$shi") ts=$(per "$b" "$d" "$slo" "$shi")
  echo "training step, CPU s/step: vapo $vs, torch $ts ($(ratio "$ts" "$vs")x)"
fi
if [ "${ONLY:-sample}" = sample ]; then
  for n in "$nlo" "$nhi"; do
    v=$(vsample "$n") t=$(tsample "$n")
    vi=$(field cpu_s_per_image <<<"$v") ti=$(field cpu_s_per_image <<<"$t")
    ve=$(field cpu_ms_per_image_eval <<<"$v") te=$(field cpu_ms_per_image_eval <<<"$t")
    echo "RK45 sampling, $n images, CPU s/image: vapo $vi (NFE $(field mean_nfe <<<"$v")), torch+scipy $ti" \
      "(NFE $(field mean_nfe <<<"$t")) ($(ratio "$ti" "$vi")x); CPU ms per image and evaluation: vapo $ve," \
      "torch $te ($(ratio "$te" "$ve")x)"
  done
fi
rm -rf "$out"
