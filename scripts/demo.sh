#!/usr/bin/env bash
# README command one: install what is missing, build, generate the demo data set from Debian's
# Fashion-MNIST, and train + evaluate configs/demo.yaml, ending with the test report.
#   scripts/demo.sh [CONFIG] [KEY=VALUE overrides...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
bash scripts/build.sh build
./build/bin/mmintent_make_demo --out data/demo
config="${1:-configs/demo.yaml}"
shift || true
./build/bin/mmintent train "$config" "$@"
