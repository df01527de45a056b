#pragma once
/// Audio encoder: log-mel features [B,T,n_mels] through a convolutional front end (two 3x3
/// convolutions of stride 2 over time x mel, each with ReLU: a quarter of the frames and of the
/// mel bands) and an LSTM or GRU stack with padding-aware pooling (models/detail/recurrent.h,
/// the text encoder's; the fused CPU kernel on the CPU). Padded frames must be zero: they then
/// act as the convolutions' own zero padding, so an utterance's encoding does not depend on
/// how much its batch padded it. With global_norm the bands are first normalised with the
/// training set's statistics (the frames past each length set back to zero).

#include "mmintent/models/detail/recurrent.h"
#include "mmintent/models/modality_encoder.h"

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/pimpl.h>

#include <string>

namespace mmintent {

/// Example: `AudioEncoderOptions().n_mels(64).channels(32).hidden_size(128)`.
struct AudioEncoderOptions {
  /// Mel bands of the input; set from the data's features (`data.audio.n_mels`), not configured.
  TORCH_ARG(int64_t, n_mels) = 64;
  /// Output channels of both convolutions.
  TORCH_ARG(int64_t, channels) = 32;
  /// "lstm" or "gru".
  TORCH_ARG(std::string, type) = "gru";
  TORCH_ARG(int64_t, hidden_size) = 128;
  TORCH_ARG(int64_t, num_layers) = 2;
  TORCH_ARG(bool, bidirectional) = true;
  /// Dropout on the front end's output and between RNN layers.
  TORCH_ARG(double, dropout) = 0.1;
  /// "last", "mean" or "max" over the real (unpadded) frames.
  TORCH_ARG(std::string, pooling) = "mean";
  /// auto | fused | native, as the text encoder's.
  TORCH_ARG(std::string, rnn_kernel) = "auto";
  /// Normalises each mel band with the training set's mean and standard deviation
  /// (`data.audio.normalize: global`): kept as the buffers feature_mean and feature_std (so in
  /// every checkpoint and export), set by set_feature_stats before training (the training run
  /// fits them: training/feature_stats.h). Until then they are 0 and 1.
  TORCH_ARG(bool, global_norm) = false;
};

class AudioEncoderImpl : public ModalityEncoderImpl {
 public:
  explicit AudioEncoderImpl(AudioEncoderOptions options);
  void reset();
  /// features [B,T,n_mels] float (zero past each length), lengths [B] int64 frames (0 for a
  /// sample without audio: a defined but meaningless row that callers mask) -> [B,output_dim()].
  torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& lengths);
  /// The "audio" modality: forward(input.data, input.lengths).
  torch::Tensor encode(const ModalityInput& input) override { return forward(input.data, input.lengths); }
  int64_t output_dim() const override { return rnn_.output_dim(); }
  /// Frames left of `frames` input frames after the front end's two stride-2 convolutions.
  static int64_t subsampled(int64_t frames);
  /// Sets the global normalisation's per-band mean and standard deviation ([n_mels] each; a
  /// deviation below 1e-5 is raised to it). Throws std::invalid_argument without global_norm
  /// or for other shapes.
  void set_feature_stats(const torch::Tensor& mean, const torch::Tensor& std);

  AudioEncoderOptions options;

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::Tensor feature_mean_, feature_std_;  ///< [n_mels] buffers, with global_norm only
  detail::RecurrentPooling rnn_;
};
TORCH_MODULE(AudioEncoder);

}  // namespace mmintent
