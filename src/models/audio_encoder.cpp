#include "mmintent/models/audio_encoder.h"

#include <torch/torch.h>

#include <stdexcept>
#include <string>

namespace mmintent {

AudioEncoderImpl::AudioEncoderImpl(AudioEncoderOptions options_) : options(std::move(options_)) {
  reset();
}

int64_t AudioEncoderImpl::subsampled(int64_t frames) {
  // A 3-wide convolution of stride 2 and padding 1 keeps floor((n - 1) / 2) + 1 of n >= 1.
  for (int k = 0; k < 2; ++k) frames = frames > 0 ? (frames - 1) / 2 + 1 : 0;
  return frames;
}

void AudioEncoderImpl::reset() {
  TORCH_CHECK(options.n_mels() >= 4, "AudioEncoder: n_mels must be >= 4, got ", options.n_mels());
  TORCH_CHECK(options.channels() > 0, "AudioEncoder: channels must be > 0, got ", options.channels());
  using torch::nn::Conv2dOptions;
  conv1_ = register_module("conv1", torch::nn::Conv2d(Conv2dOptions(1, options.channels(), 3)
                                                           .stride(2).padding(1)));
  conv2_ = register_module("conv2", torch::nn::Conv2d(Conv2dOptions(options.channels(),
                                                                    options.channels(), 3)
                                                           .stride(2).padding(1)));
  dropout_ = register_module("dropout", torch::nn::Dropout(options.dropout()));
  if (options.global_norm()) {
    feature_mean_ = register_buffer("feature_mean", torch::zeros({options.n_mels()}));
    feature_std_ = register_buffer("feature_std", torch::ones({options.n_mels()}));
  } else {
    feature_mean_ = feature_std_ = torch::Tensor();
  }
  detail::RecurrentOptions rnn;
  rnn.input_size = options.channels() * subsampled(options.n_mels());
  rnn.type = options.type();
  rnn.hidden_size = options.hidden_size();
  rnn.num_layers = options.num_layers();
  rnn.bidirectional = options.bidirectional();
  rnn.dropout = options.dropout();
  rnn.pooling = options.pooling();
  rnn.rnn_kernel = options.rnn_kernel();
  rnn_ = detail::RecurrentPooling(*this, std::move(rnn), "AudioEncoder");
}

void AudioEncoderImpl::set_feature_stats(const torch::Tensor& mean, const torch::Tensor& std) {
  if (!options.global_norm()) {
    throw std::invalid_argument("AudioEncoder: feature statistics need global_norm (data.audio.normalize: global)");
  }
  const auto M = options.n_mels();
  if (mean.dim() != 1 || mean.size(0) != M || std.dim() != 1 || std.size(0) != M) {
    throw std::invalid_argument("AudioEncoder: feature statistics must be [" + std::to_string(M) + "] each");
  }
  torch::NoGradGuard no_grad;
  feature_mean_.copy_(mean.to(feature_mean_.device(), feature_mean_.scalar_type()));
  feature_std_.copy_(std.to(feature_std_.device(), feature_std_.scalar_type()).clamp_min(1e-5));
}

torch::Tensor AudioEncoderImpl::forward(const torch::Tensor& features, const torch::Tensor& lengths) {
  TORCH_CHECK(features.dim() == 3 && features.size(2) == options.n_mels(),
              "AudioEncoder: expected features [B,T,", options.n_mels(), "], got ", features.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == features.size(0),
              "AudioEncoder: lengths must be [B]");
  const int64_t B = features.size(0);
  auto half = lengths.to(torch::kCPU, torch::kLong).clone();
  auto frames = half.clone();
  auto* h = half.data_ptr<int64_t>();
  auto* f = frames.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    h[b] = h[b] > 0 ? (h[b] - 1) / 2 + 1 : 0;
    f[b] = subsampled(f[b]);
  }
  auto input = features;
  if (options.global_norm()) {
    // Normalised padding would be -mean/std: zero it again, as the contract above needs.
    const auto real = (torch::arange(features.size(1), torch::kLong).unsqueeze(0) < lengths.to(torch::kCPU, torch::kLong).unsqueeze(1))
                          .to(features.device(), features.scalar_type())
                          .unsqueeze(2);  // [B,T,1]
    input = (features - feature_mean_.to(features.scalar_type())) / feature_std_.to(features.scalar_type()) * real;
  }
  auto x = torch::relu(conv1_->forward(input.unsqueeze(1)));  // [B,C,T/2,M/2]
  // Past each utterance's own frames the first convolution gives relu(bias), not the zeros a
  // shorter batch would pad with: zero them, so the second convolution sees the same either way.
  const auto valid = torch::arange(x.size(2), torch::kLong).unsqueeze(0) < half.unsqueeze(1);  // [B,T/2]
  x = x * valid.to(x.device(), x.scalar_type()).view({B, 1, x.size(2), 1});
  x = torch::relu(conv2_->forward(x));                              // [B,C,T/4,M/4]
  // Frames as the sequence, channels x mel bands as each frame's features.
  x = x.permute({0, 2, 1, 3}).reshape({B, x.size(2), x.size(1) * x.size(3)});
  x = dropout_->forward(x);
  return rnn_.forward(x, frames, is_training());
}

}  // namespace mmintent
