#!/usr/bin/env bash
# Configures and builds mmintent into BUILD_DIR (default: build/) with Ninja (and ccache where
# installed).
#   scripts/build.sh [--targets "T1 T2 ..."] [BUILD_DIR] [extra cmake args...]
#     --targets  build only these targets (e.g. scripts/demo.sh: the CLI and the demo's data
#                generator), not the test suite
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
targets=()
if [ "${1:-}" = "--targets" ]; then
  read -r -a names <<<"${2:?--targets needs a list of targets}"
  for t in "${names[@]}"; do targets+=(--target "$t"); done
  shift 2
fi
build="${1:-$root/build}"
shift || true
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
elif (($#)); then
  cmake "$build" "$@"
fi
jobs="$(nproc)"
time cmake --build "$build" -j "$jobs" "${targets[@]}"
