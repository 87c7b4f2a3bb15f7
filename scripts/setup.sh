#!/usr/bin/env bash
# Installs every Debian package vapo needs to build, test and train.
# Idempotent and quiet when everything is already present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config patchelf
  libblis-openmp-dev libmicrohttpd-dev libjansson-dev libpng-dev zlib1g-dev
  python3 python3-numpy python3-scipy python3-torch python3-yaml
  dataset-fashion-mnist
  openmpi-bin libopenmpi-dev
  curl
  clang libclang-rt-dev libomp-dev  # libFuzzer harnesses (scripts/fuzz.sh, the fuzz tests)
)
[ "${VAPO_SETUP_BROWSER:-0}" = 1 ] && packages+=(chromium)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
