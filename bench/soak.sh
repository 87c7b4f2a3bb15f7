#!/usr/bin/env bash
# Soak test of vapo-serve: MINUTES of mixed traffic at saturation on the
# bundled model (CPU); PASS/FAIL on 5xx, answers, client errors and RSS growth.
#   bench/soak.sh MINUTES [bench/soak.py options, e.g. --clients 16 --out DIR]
# Uses build/vapo-serve (cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/soak.sh MINUTES [options of bench/soak.py]" >&2; exit 2; }
minutes=$1; shift
[ -x build/vapo-serve ] || { echo "soak: build/vapo-serve not built (see the top of this script)" >&2; exit 2; }
exec /usr/bin/python3 bench/soak.py --minutes "$minutes" "$@"
