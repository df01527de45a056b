#!/usr/bin/env bash
# Installs every Debian package mmintent needs to build, test and run its demo. Idempotent:
# when everything is installed it only checks (about a second) and changes nothing.
# Usage: scripts/setup.sh [EXTRA_PACKAGE...]   (extra packages: e.g. scripts/setup_bench.sh's)
# Also points the system BLAS at BLIS (see README "Quick start": Debian's LibTorch calls
# whatever libblas.so.3 the alternatives system selects, and the reference BLAS is ~20x slower).
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config ccache
  # clang and its runtimes (libFuzzer, sanitizers) for scripts/fuzz.sh
  clang libclang-rt-14-dev
  # libraries
  libtorch-dev libopencv-dev libsentencepiece-dev libyaml-cpp-dev libspdlog-dev
  nlohmann-json3-dev libcli11-dev zlib1g-dev libgtest-dev libgmock-dev
  # the HTTP server (mmintent serve): cpp-httplib with TLS through OpenSSL; and a headless
  # browser for its web page's test (tests/browser, label "browser")
  libcpp-httplib-dev libssl-dev chromium
  # Google Benchmark: bench/ (CI runs it in smoke mode)
  libbenchmark-dev
  # an optimised BLAS for LibTorch's matrix products
  libblis4-openmp
  # real images for the demo data set
  dataset-fashion-mnist
  # multi-process training: Gloo's headers (c10d's ProcessGroupGloo needs them) and torchrun,
  # the launcher, from Debian's PyTorch (the same LibTorch 1.13)
  libgloo-dev python3-torch
)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages are installed"
fi

blis=/usr/lib/x86_64-linux-gnu/blis-openmp/libblas.so.3
alt=libblas.so.3-x86_64-linux-gnu
if [ -e "$blis" ] && [ "$(readlink -f /etc/alternatives/$alt 2>/dev/null)" != "$blis" ]; then
  echo "setup: selecting BLIS as the system BLAS ($alt)"
  if [ "$(id -u)" -ne 0 ]; then sudo update-alternatives --set "$alt" "$blis"; else update-alternatives --set "$alt" "$blis"; fi
fi
echo "setup: BLAS in use: $(readlink -f /etc/alternatives/$alt 2>/dev/null || echo unknown)"
