#include "mmintent/models/image_encoder.h"

#include "mmintent/models/detail/fused_norm.h"

#include <torch/torch.h>

namespace mmintent {

ImageEncoderImpl::ImageEncoderImpl(ImageEncoderOptions options_) : options(std::move(options_)) {
  reset();
}

void ImageEncoderImpl::reset() {
  TORCH_CHECK(options.in_channels() > 0, "ImageEncoder: in_channels must be > 0");
  TORCH_CHECK(!options.channels().empty(), "ImageEncoder: channels must not be empty");
  TORCH_CHECK(options.kernel_size() % 2 == 1, "ImageEncoder: kernel_size must be odd, got ",
              options.kernel_size());
  TORCH_CHECK(options.convs_per_block() >= 1, "ImageEncoder: convs_per_block must be >= 1");
  TORCH_CHECK(options.pool() == "max" || options.pool() == "avg" || options.pool() == "none",
              "ImageEncoder: pool must be max, avg or none, got '", options.pool(), "'");
  TORCH_CHECK(options.out_dim() > 0, "ImageEncoder: out_dim must be > 0");
  TORCH_CHECK(options.norm_kernel() == "auto" || options.norm_kernel() == "fused" ||
                  options.norm_kernel() == "native",
              "ImageEncoder: norm_kernel must be auto, fused or native, got '",
              options.norm_kernel(), "'");

  blocks_ = torch::nn::Sequential();
  fused_span_.clear();
  int64_t in = options.in_channels();
  const int64_t k = options.kernel_size();
  for (int64_t out : options.channels()) {
    TORCH_CHECK(out > 0, "ImageEncoder: channels must be > 0");
    for (int64_t c = 0; c < options.convs_per_block(); ++c) {
      blocks_->push_back(torch::nn::Conv2d(
          torch::nn::Conv2dOptions(in, out, k).padding(k / 2).bias(!options.batch_norm())));
      fused_span_.push_back(0);
      if (options.batch_norm()) {
        blocks_->push_back(torch::nn::BatchNorm2d(out));
        const bool pooled = c + 1 == options.convs_per_block() && options.pool() == "max";
        fused_span_.push_back(pooled ? 2 : 1);
      }
      blocks_->push_back(torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
      fused_span_.push_back(0);
      in = out;
    }
    if (options.pool() == "max") blocks_->push_back(torch::nn::MaxPool2d(2));
    if (options.pool() == "avg") blocks_->push_back(torch::nn::AvgPool2d(2));
    if (options.pool() != "none") fused_span_.push_back(0);
    if (options.dropout() > 0) {
      blocks_->push_back(torch::nn::Dropout2d(options.dropout()));
      fused_span_.push_back(0);
    }
  }
  TORCH_INTERNAL_ASSERT(fused_span_.size() == blocks_->size());
  register_module("blocks", blocks_);
  projection_ = register_module("projection", torch::nn::Linear(in, options.out_dim()));
  if (options.channels_last()) {
    // Module::to, optimizer state (zeros_like) and checkpoint loading (copy_) keep the order.
    // `to`, not `contiguous`: a weight with one input channel [out, 1, k, k] counts as
    // channels-last already and `contiguous` would leave its strides as they are, which makes
    // the first convolution's output (and all that follows) plain NCHW.
    torch::NoGradGuard no_grad;
    for (auto& p : blocks_->parameters()) {
      if (p.dim() == 4) {
        p.set_data(p.data().to(p.options(), /*non_blocking=*/false, /*copy=*/false,
                               at::MemoryFormat::ChannelsLast));
      }
    }
  }
}

torch::Tensor ImageEncoderImpl::forward(const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == options.in_channels(),
              "ImageEncoder: expected images [B,", options.in_channels(), ",H,W], got ",
              images.sizes());
  const auto input =
      options.channels_last() ? images.contiguous(at::MemoryFormat::ChannelsLast) : images;
  const bool fused = is_training() && options.batch_norm() &&
                     (options.norm_kernel() == "fused" ||
                      (options.norm_kernel() == "auto" && options.channels_last()));
  auto x = fused ? forward_fused(input) : blocks_->forward(input);
  x = x.mean({2, 3});  // global average pooling -> [B, C]
  if (options.dropout() > 0) x = torch::dropout(x, options.dropout(), is_training());
  return torch::relu(projection_->forward(x));
}

torch::Tensor ImageEncoderImpl::forward_fused(torch::Tensor x) {
  for (size_t i = 0; i < blocks_->size(); ++i) {
    const auto norm = fused_span_[i]
                          ? std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(blocks_->ptr(i))
                          : nullptr;
    const bool can = norm && detail::fused_norm_supported(x);
    TORCH_CHECK(!norm || can || options.norm_kernel() == "auto",
                "ImageEncoder: norm_kernel 'fused' runs on the CPU in float32 or float64 with "
                "channels_last (got ", x.scalar_type(), " on ", x.device(),
                x.is_contiguous(at::MemoryFormat::ChannelsLast) ? "" : ", not channels-last",
                "); use norm_kernel 'auto' or 'native'");
    if (!can) {
      x = blocks_->begin()[static_cast<std::ptrdiff_t>(i)].forward(x);
      continue;
    }
    // BatchNorm2d's own bookkeeping: the batch count, and the cumulative average's factor when
    // no momentum is set.
    double factor = norm->options.momentum().value_or(0.0);
    {
      torch::NoGradGuard no_grad;
      norm->num_batches_tracked += 1;
      if (!norm->options.momentum()) factor = 1.0 / norm->num_batches_tracked.item<double>();
    }
    x = detail::batch_norm_relu_pool(x, norm->weight, norm->bias, norm->running_mean, norm->running_var,
                             factor, norm->options.eps(), fused_span_[i] == 2);
    i += fused_span_[i];
  }
  return x;
}

}  // namespace mmintent
