#!/usr/bin/env bash
# Installs what the benchmark suite in bench/ needs on top of scripts/setup.sh (which has
# Google Benchmark and Debian's PyTorch, the same LibTorch 1.13 that mmintent links):
# OpenCV's and sentencepiece's Python bindings for the Python reference
# (bench/reference/train_reference.py). Idempotent. Not part of CI's set-up.
# The reference runs under Debian's /usr/bin/python3 (a python3 earlier on PATH, e.g. pyenv's,
# does not see Debian's modules).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# setup.sh --dev installs python3-torch and libbenchmark-dev already; the rest on top:
#   python3-opencv: the reference's image decoding and resizing
#   python3-sentencepiece: the reference tokenises with the run's own tokenizer.model
#   python3-numpy, python3-yaml (the reference reads the effective config)
#   time: /usr/bin/time, peak resident memory and CPU time of each run
#   wrk: the HTTP load generator of bench/serve_load.sh
bash "$root/scripts/setup.sh" --dev python3-opencv python3-sentencepiece python3-numpy python3-yaml time wrk
/usr/bin/python3 -c 'import torch, cv2, sentencepiece; print("setup_bench: python3-torch", torch.__version__, "| opencv", cv2.__version__, "| sentencepiece", sentencepiece.__version__)'
