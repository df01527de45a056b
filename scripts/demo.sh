#!/usr/bin/env bash
# README command one: install what is missing (scripts/setup.sh: the user's packages, no
# system setting changed), build only what the demo needs (the CLI and the data generator, not
# the test suite), generate the demo data set from Debian's Fashion-MNIST, and train + evaluate
# configs/demo.yaml, ending with the test report. A rerun replaces the previous demo run.
#   scripts/demo.sh [CONFIG] [KEY=VALUE overrides...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
bash scripts/build.sh --targets "mmintent_cli mmintent_make_demo" build
./build/bin/mmintent_make_demo --out data/demo
config="${1:-configs/demo.yaml}"
shift || true
./build/bin/mmintent train "$config" output.overwrite=true "$@"
