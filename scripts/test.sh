#!/usr/bin/env bash
# Sets up, builds and runs every test (the README's test command).
#   scripts/test.sh            Release build in build/, all tests
#   VAPO_SANITIZE=1 scripts/test.sh   ASan + UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
# Sleeping, not spinning, OpenMP threads: on a shared or busy machine spinning
# barriers cost up to 5x (bench/BENCHMARKS.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# ctest's `container` test: build the image and run it (scripts/container-test.sh)
export VAPO_CONTAINER_TEST=${VAPO_CONTAINER_TEST:-1}
VAPO_SETUP_BROWSER=1 bash scripts/setup.sh  # chromium for the page test
if [ "${VAPO_SANITIZE:-0}" = 1 ]; then
  dir=build-asan; flags=(-DCMAKE_BUILD_TYPE=Debug -DVAPO_SANITIZE=ON)
else
  dir=build; flags=(-DCMAKE_BUILD_TYPE=Release)
fi
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir" && ctest --output-on-failure -j"$(nproc)"
