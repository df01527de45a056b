#include "mmintent/models/image_encoder.h"

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

  blocks_ = torch::nn::Sequential();
  int64_t in = options.in_channels();
  const int64_t k = options.kernel_size();
  for (int64_t out : options.channels()) {
    TORCH_CHECK(out > 0, "ImageEncoder: channels must be > 0");
    for (int64_t c = 0; c < options.convs_per_block(); ++c) {
      blocks_->push_back(torch::nn::Conv2d(
          torch::nn::Conv2dOptions(in, out, k).padding(k / 2).bias(!options.batch_norm())));
      if (options.batch_norm()) blocks_->push_back(torch::nn::BatchNorm2d(out));
      blocks_->push_back(torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
      in = out;
    }
    if (options.pool() == "max") blocks_->push_back(torch::nn::MaxPool2d(2));
    if (options.pool() == "avg") blocks_->push_back(torch::nn::AvgPool2d(2));
    if (options.dropout() > 0) blocks_->push_back(torch::nn::Dropout2d(options.dropout()));
  }
  register_module("blocks", blocks_);
  projection_ = register_module("projection", torch::nn::Linear(in, options.out_dim()));
  if (options.channels_last()) {
    // Module::to, optimizer state (zeros_like) and checkpoint loading (copy_) keep the order.
    torch::NoGradGuard no_grad;
    for (auto& p : blocks_->parameters()) {
      if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
}

torch::Tensor ImageEncoderImpl::forward(const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == options.in_channels(),
              "ImageEncoder: expected images [B,", options.in_channels(), ",H,W], got ",
              images.sizes());
  auto x = blocks_->forward(options.channels_last()
                                ? images.contiguous(at::MemoryFormat::ChannelsLast)
                                : images);
  x = x.mean({2, 3});  // global average pooling -> [B, C]
  if (options.dropout() > 0) x = torch::dropout(x, options.dropout(), is_training());
  return torch::relu(projection_->forward(x));
}

}  // namespace mmintent
