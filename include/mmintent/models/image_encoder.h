#pragma once
/// CNN image encoder: conv blocks (conv, batch norm, ReLU, pooling, dropout), global average
/// pooling and a projection.

#include "mmintent/models/modality_encoder.h"

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstddef>
#include <string>
#include <vector>

namespace mmintent {

/// Example: `ImageEncoderOptions().in_channels(1).channels({32, 64}).out_dim(128)`.
struct ImageEncoderOptions {
  TORCH_ARG(int64_t, in_channels) = 1;
  /// Output channels of each block; every block halves the spatial size when `pool` != "none".
  TORCH_ARG(std::vector<int64_t>, channels) = std::vector<int64_t>{32, 64};
  /// Convolutions per block (each kernel_size x kernel_size, "same" padding).
  TORCH_ARG(int64_t, convs_per_block) = 1;
  TORCH_ARG(int64_t, kernel_size) = 3;
  TORCH_ARG(bool, batch_norm) = true;
  /// "max", "avg" or "none": 2x2 pooling at the end of each block.
  TORCH_ARG(std::string, pool) = "max";
  /// Dropout after each block and before the projection.
  TORCH_ARG(double, dropout) = 0.1;
  TORCH_ARG(int64_t, out_dim) = 128;
  /// Keep the convolution weights and activations in channels-last (NHWC) memory order, which
  /// oneDNN and cuDNN run faster, and where the fused batch-norm kernel runs (norm_kernel); the
  /// values computed are the same up to rounding.
  TORCH_ARG(bool, channels_last) = true;
  /// Batch norm + ReLU (+ max pooling) in training: "fused" runs mmintent's CPU kernel
  /// (models/detail/fused_norm.h: needs channels_last and batch_norm, float or double on the CPU),
  /// "native" LibTorch's three operators, "auto" the fused kernel wherever it can run. The same
  /// function and parameters either way; evaluation always runs LibTorch's.
  TORCH_ARG(std::string, norm_kernel) = "auto";
};

class ImageEncoderImpl : public ModalityEncoderImpl {
 public:
  explicit ImageEncoderImpl(ImageEncoderOptions options = {});
  void reset();
  /// images [B,C,H,W] float -> features [B,out_dim].
  torch::Tensor forward(const torch::Tensor& images);
  /// The "image" modality: forward(input.data).
  torch::Tensor encode(const ModalityInput& input) override { return forward(input.data); }
  int64_t output_dim() const override { return options.out_dim(); }

  ImageEncoderOptions options;

 private:
  /// The blocks through the fused kernel: each batch norm with the ReLU and any max pooling
  /// that follow it as one operator, the other layers as they are.
  torch::Tensor forward_fused(torch::Tensor x);

  torch::nn::Sequential blocks_{nullptr};
  torch::nn::Linear projection_{nullptr};
  /// Per layer of blocks_: how many layers after it a fused batch norm takes with it (the ReLU,
  /// and the max pooling when one follows), else 0.
  std::vector<size_t> fused_span_;
};
TORCH_MODULE(ImageEncoder);

}  // namespace mmintent
