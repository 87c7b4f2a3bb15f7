#!/usr/bin/env bash
# Sets up, builds and starts vapo-serve on the bundled default model
# (the README's first command). Extra arguments go to vapo-serve, e.g.
#   scripts/serve.sh --port 8080 --host 0.0.0.0
set -euo pipefail
cd "$(dirname "$0")/.."
# Sleeping, not spinning, OpenMP threads: on a shared or busy machine spinning
# barriers cost up to 5x (bench/BENCHMARKS.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec build/vapo-serve "$@" models/fmnist-small.safetensors
