#!/usr/bin/env bash
# The U-Net energy against its flow-matching peer at EQUAL CPU TIME (issue 24):
# vapo-train --preset fmnist-unet and bench/flow_matching_peer.py (a
# time-conditioned U-Net of about the same parameter count, flow matching in
# PyTorch) each get BUDGET process CPU seconds on one thread (nice 10; the
# machine is shared, so wall-clock says nothing), vapo-train stopped by SIGTERM
# when /proc says its CPU time reached the budget (it saves interrupted.safetensors).
# Both sample N images of seed 1000 with RK4, 20 steps (80 field evaluations),
# EMA weights; bench/sample_quality.py --grid judges the grids.
#   bench/run_unet_peer.sh [BUDGET=600] [OUT=runs/unet-peer] [N=128] [EXTRA vapo-train flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-600} out=${2:-runs/unet-peer} n=${3:-128}
shift $(( $# < 3 ? $# : 3 ))
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1
mkdir -p "$out"

# runs "$@" until its CPU time (user + system) reaches $budget seconds, then SIGTERM
budget_run() {
  "$@" & local pid=$! tck; tck=$(getconf CLK_TCK)
  while kill -0 "$pid" 2>/dev/null; do
    local t; t=$(awk -v tck="$tck" '{print int(($14 + $15) / tck)}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    if [ "$t" -ge "$budget" ]; then kill -TERM "$pid"; break; fi
    sleep 2
  done
  wait "$pid" || true
}

budget_run nice -n 10 build/vapo-train --preset fmnist-unet --device cpu --threads 1 --steps 1000000 --batch 64 \
  --time-tilt -2 --warmup 200 --ema 0.995 --sample-every 0 --save-every 1000000 --log-every 25 \
  --out "$out/unet" "$@" > "$out/unet.log" 2>&1 &
nice -n 10 /usr/bin/python3 bench/flow_matching_peer.py --cpu-seconds "$budget" --threads 1 --ema 0.995 \
  -n "$n" --seed 1000 --rk4-steps 20 --out "$out/peer" > "$out/peer.log" 2>&1 &
wait
/usr/bin/time -f "%U %S" -o "$out/unet-sample.time" nice -n 10 build/vapo-sample "$out/unet/interrupted.safetensors" \
  -n "$n" --seed 1000 --cols 16 --solver rk4 --steps 20 --device cpu --threads 1 -q -o "$out/unet/samples.png"
/usr/bin/python3 bench/sample_quality.py --grid "$out/unet/samples.png" --grid "$out/peer/samples.png" --threads 1 \
  | tee "$out/quality.txt"
