#pragma once
/// An LSTM or GRU stack over padded sequences with padding-aware pooling: what the text and
/// audio encoders share. Not a module of its own: it registers its LSTM/GRU in the owning
/// encoder as "rnn", so parameter names stay "<encoder>.rnn.weight_ih_l0" and so on. Sequences
/// are packed, so a sequence's encoding never depends on how much it was padded. On the CPU the
/// RNN runs on mmintent's fused kernel (`rnn_kernel`, models/detail/fused_rnn.h).

#include <torch/nn/module.h>
#include <torch/nn/modules/rnn.h>
#include <torch/nn/utils/rnn.h>

#include <string>
#include <utility>

namespace mmintent::detail {

struct RecurrentOptions {
  int64_t input_size = 0;
  std::string type = "lstm";  ///< lstm | gru
  int64_t hidden_size = 128;
  int64_t num_layers = 1;
  bool bidirectional = true;
  double dropout = 0.0;  ///< between layers (only with num_layers > 1)
  std::string pooling = "mean";    ///< last | mean | max over each sequence's real steps
  std::string rnn_kernel = "auto"; ///< auto | fused | native (see TextEncoderOptions)
};

class RecurrentPooling {
 public:
  RecurrentPooling() = default;
  /// Checks `options` (TORCH_CHECK naming `who`, e.g. "TextEncoder") and registers the RNN in
  /// `owner` as "rnn".
  RecurrentPooling(torch::nn::Module& owner, RecurrentOptions options, const std::string& who);
  /// x [B,T,D] (batch first), lengths [B] int64 (a length of 0 is read as 1: the caller masks
  /// such rows) -> [B, output_dim()].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lengths, bool training);
  int64_t output_dim() const { return options_.hidden_size * (options_.bidirectional ? 2 : 1); }
  const RecurrentOptions& options() const { return options_; }

 private:
  RecurrentOptions options_;
  std::string who_;
  torch::nn::LSTM lstm_{nullptr};
  torch::nn::GRU gru_{nullptr};

  /// The RNN over packed data with the fused kernel: the packed output, and the final hidden
  /// state of the last layer's directions [B, output_dim()] in sorted order.
  std::pair<torch::Tensor, torch::Tensor> fused_rnn(const torch::Tensor& data,
                                                    const torch::Tensor& batch_sizes, bool training);
  /// LibTorch's RNN over packed data with the weights an adapter shows (weight_view.h): the
  /// packed output; `h_n` [layers * dirs, B, H] in the input's order.
  torch::nn::utils::rnn::PackedSequence viewed_rnn(const torch::nn::utils::rnn::PackedSequence& packed,
                                                   torch::Tensor& h_n, bool training);
  /// "mean" or "max" pooling of the packed RNN output over each sequence's real steps.
  torch::Tensor pool(const torch::nn::utils::rnn::PackedSequence& out,
                     const torch::Tensor& safe_lengths);
};

}  // namespace mmintent::detail
