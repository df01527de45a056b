#!/usr/bin/env bash
# Builds the LibTorch-only core and runs the synthetic training check on a CUDA GPU. Needs only
# a CUDA LibTorch (no OpenCV, sentencepiece or yaml-cpp): by default the one inside the
# installed PyTorch wheel, or the one named by TORCH_PREFIX.
#   scripts/cuda_smoke.sh [BUILD_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build-cuda}"
prefix="${TORCH_PREFIX:-$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')}"
echo "cuda_smoke: LibTorch from $prefix"
# NCCL's header for c10d's NCCL backend: the wheel's nvidia-nccl package has it (CMake finds
# nccl.h under NCCL_ROOT); without it, multi-process CUDA runs use Gloo.
nccl_root="$(python3 -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)"
if [ -n "$nccl_root" ] && [ -z "${NCCL_ROOT:-}" ]; then export NCCL_ROOT="$nccl_root"; fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DMMINTENT_CORE_ONLY=ON -DCMAKE_PREFIX_PATH="$prefix"
cmake --build "$build" -j "$(nproc)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$build/bin/mmintent_smoke" --device cuda --epochs 6 --run-dir "$build/smoke_run"
# Mixed precision (bf16 autocast) and channels-last convolutions on the GPU.
"$build/bin/mmintent_smoke" --device cuda --epochs 6 --run-dir "$build/smoke_run_bf16" \
  --precision bf16 --channels-last
# Data-parallel: 2 ranks under torchrun. With 2 GPUs or more, one GPU per rank over NCCL (when
# this build found nccl.h; Gloo otherwise); with one GPU, both ranks on it over Gloo, whose
# collectives stage the CUDA tensors through host memory.
gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU" || true)
if [ "$gpus" -ge 2 ]; then dp_args=(--device cuda); else dp_args=(--device cuda:0 --backend gloo); fi
python3 -m torch.distributed.run --no_python --nproc_per_node=2 --redirects 1 --tee 1 \
  --log_dir "$build/smoke_2_ranks_logs" --master_port 29518 \
  "$build/bin/mmintent_smoke" "${dp_args[@]}" --epochs 6 --run-dir "$build/smoke_run_2_ranks"
