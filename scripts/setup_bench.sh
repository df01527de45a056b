#!/usr/bin/env bash
# Installs what the benchmark suite in bench/ needs on top of scripts/setup.sh: Google
# Benchmark for the component benchmarks, and Debian's PyTorch (the same LibTorch 1.13 that
# mmintent links), OpenCV's and sentencepiece's Python bindings for the Python reference
# (bench/reference/train_reference.py). Idempotent. Not part of CI's set-up.
# The reference runs under Debian's /usr/bin/python3 (a python3 earlier on PATH, e.g. pyenv's,
# does not see Debian's modules).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"

packages=(
  libbenchmark-dev         # Google Benchmark (bench/components.cpp)
  python3-torch            # the reference: Debian's PyTorch 1.13 over the same libtorch
  python3-opencv           # the reference's image decoding and resizing
  python3-sentencepiece    # the reference tokenises with the run's own tokenizer.model
  python3-numpy
  python3-yaml             # the reference reads the effective config
  time                     # /usr/bin/time: peak resident memory and CPU time of each run
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup_bench: installing ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup_bench: all ${#packages[@]} packages are installed"
fi
/usr/bin/python3 -c 'import torch, cv2, sentencepiece; print("setup_bench: python3-torch", torch.__version__, "| opencv", cv2.__version__, "| sentencepiece", sentencepiece.__version__)'
