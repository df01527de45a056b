#pragma once
/// One direction of one LSTM or GRU layer over a packed batch, computed on the CPU with a
/// hand-written backward pass: the same function as LibTorch's `at::lstm` / `at::gru` on a
/// PackedSequence (same parameters, same gate order), but each time step is a matrix product
/// and a few vectorised element-wise passes instead of ~15 autograd-recorded operators, and the
/// weight gradients are one matrix product over all time steps. The text encoder uses it on
/// the CPU (`text_encoder.rnn_kernel`); on CUDA LibTorch's own (cuDNN) kernel is used.

#include <ATen/core/Tensor.h>

namespace mmintent::detail {

/// `x`: the packed sequence's data [N, input] (time-major: the rows of step 0, then of step 1,
/// ...), float or double, on the CPU. `batch_sizes`: int64 [T] on the CPU, non-increasing, summing
/// to N (PackedSequence::batch_sizes()). Weights and biases as torch::nn::LSTM's
/// (`weight_ih_l0` [4H, input], `weight_hh_l0` [4H, H], `bias_ih_l0`, `bias_hh_l0` [4H]; gate
/// order i, f, g, o) or torch::nn::GRU's (3H; gate order r, z, n). `reverse`: the backward
/// direction of a bidirectional layer (each sequence read from its own last step). The initial
/// state is zero. Returns the hidden state at every step, packed like `x`: [N, H].
/// Differentiable with respect to `x` and the four parameters. Under CPU autocast (bf16) the
/// matrix products take bfloat16 operands, as LibTorch's kernels would; the states, gates and
/// gradients stay in x's dtype.
at::Tensor packed_lstm_direction(const at::Tensor& x, const at::Tensor& batch_sizes,
                                 const at::Tensor& w_ih, const at::Tensor& w_hh,
                                 const at::Tensor& b_ih, const at::Tensor& b_hh, bool reverse);
at::Tensor packed_gru_direction(const at::Tensor& x, const at::Tensor& batch_sizes,
                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const at::Tensor& b_ih, const at::Tensor& b_hh, bool reverse);

/// Whether the fused kernel can run these inputs: CPU tensors, float or double.
bool fused_rnn_supported(const at::Tensor& x);

}  // namespace mmintent::detail
