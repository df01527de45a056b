#!/usr/bin/env bash
# Installs the Debian packages mmintent needs, and nothing else: no system setting changes.
# Idempotent: when everything is installed it only checks (about a second), needs no root and
# no sudo, and changes nothing.
#   scripts/setup.sh [--dev] [EXTRA_PACKAGE...]
#     (no flag)  what building mmintent and running its demo needs (scripts/demo.sh)
#     --dev      also what the test suite, fuzzing and benchmarks need (scripts/test.sh)
#     EXTRA_PACKAGE...  more packages on top (e.g. scripts/setup_bench.sh's)
# When a package is missing it installs it: as root directly, otherwise through sudo where
# sudo works without a password prompt. Where neither is possible it prints the one
# `apt-get install` line to run and exits 1.
#
# BLAS: mmintent's programs load BLIS (libblis4-openmp) through their own run path
# (cmake/MmintentBlas.cmake); the system's libblas.so.3, and so every other program's speed and
# numerics, stay as they are.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config
  # libraries
  libtorch-dev libopencv-dev libsentencepiece-dev libyaml-cpp-dev libspdlog-dev
  nlohmann-json3-dev libcli11-dev zlib1g-dev
  # the HTTP server (mmintent serve): cpp-httplib with TLS through OpenSSL
  libcpp-httplib-dev libssl-dev
  # an optimised BLAS for LibTorch's matrix products (about 20x the reference BLAS)
  libblis4-openmp
  # real images for the demo data set
  dataset-fashion-mnist
  # audio files (libsndfile), their features (FFTW) and the synthetic spoken data set's voices (espeak-ng)
  libsndfile1-dev libfftw3-dev espeak-ng libespeak-ng-dev
)
dev_packages=(
  # compiler cache for repeated builds
  ccache
  # GoogleTest: the test suite
  libgtest-dev libgmock-dev
  # clang and its runtimes (libFuzzer, sanitizers) for scripts/fuzz.sh
  clang libclang-rt-14-dev
  # a headless browser for the web page's test (tests/browser, label "browser")
  chromium
  # Google Benchmark: bench/ (CI runs it in smoke mode)
  libbenchmark-dev
  # multi-process training: Gloo's headers (c10d's ProcessGroupGloo needs them) and torchrun,
  # the launcher, from Debian's PyTorch (the same LibTorch 1.13)
  libgloo-dev python3-torch
  # `mmintent export --format onnx`: the exporter checks the graph with ONNX's checker
  python3-onnx
)
dev=0
if [ "${1:-}" = "--dev" ]; then
  packages+=("${dev_packages[@]}")
  dev=1
  shift
fi
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages are installed"
else
  echo "setup: missing: ${missing[*]}"
  install_line="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo_cmd=(sudo -n)
    else
      echo "setup: installing them needs root. As root (or with sudo), run:" >&2
      echo "  $install_line" >&2
      echo "then run this command again." >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The export tests run ONNX exports in ONNX Runtime for Node.js (tests/e2e/export_test.cpp), from
# the npm registry into tools/export/node_modules (the versions in its package-lock.json).
# --ignore-scripts: the package carries the CPU runtime; its install script only fetches GPU
# libraries from outside the registry.
if ((dev)); then
  root=$(cd "$(dirname "$0")/.." && pwd)
  if [ -d "$root/tools/export/node_modules/onnxruntime-node" ]; then
    echo "setup: onnxruntime-node is installed in tools/export"
  elif command -v npm >/dev/null 2>&1; then
    echo "setup: installing onnxruntime-node into tools/export/node_modules (npm ci)"
    if ! (cd "$root/tools/export" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error); then
      echo "setup: warning: npm ci failed: the ONNX export test will only write and check the graph" >&2
    fi
  else
    echo "setup: warning: no npm (Node.js 20): the ONNX export test will only write and check the graph" >&2
  fi
fi
