#pragma once
/// Training-mode batch norm + ReLU (+ 2x2 max pooling) over channels-last activations, on the
/// CPU, with a hand-written backward pass: the same function as LibTorch's `batch_norm`
/// (training) -> `relu` -> `max_pool2d(2)`, in three passes over the data forward (two for the
/// statistics, one writing the output) and two backward, where LibTorch's three operators make
/// separate passes for each (the pooling's backward zero-fills its whole input gradient first)
/// and keep the ReLU output and int64 pooling indices for the backward pass; this keeps only
/// the batch norm's input. The image encoder uses it in training on the CPU
/// (`image_encoder.norm_kernel`); elsewhere LibTorch's own kernels run.

#include <ATen/core/Tensor.h>

namespace mmintent::detail {

/// `x`: [N, C, H, W] in channels-last memory order (`is_contiguous(ChannelsLast)`), float or
/// double, on the CPU. `weight`, `bias`: the batch norm's affine parameters [C]; `running_mean`,
/// `running_var` [C]: updated in place with `momentum` (new = (1 - momentum) old + momentum
/// batch; the variance unbiased), as BatchNorm2d does in training. `pool`: follow with 2x2 max
/// pooling, stride 2 (odd trailing rows/columns dropped, as MaxPool2d(2)). Normalises with the
/// batch's statistics (biased variance, `eps`), applies ReLU, pools; returns [N, C, H', W'] in
/// channels-last order. Differentiable with respect to `x`, `weight` and `bias`.
at::Tensor batch_norm_relu_pool(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, const at::Tensor& running_mean,
                                const at::Tensor& running_var, double momentum, double eps,
                                bool pool);

/// Whether the fused kernel can run on `x`: a 4-D float or double CPU tensor in channels-last
/// memory order.
bool fused_norm_supported(const at::Tensor& x);

}  // namespace mmintent::detail
