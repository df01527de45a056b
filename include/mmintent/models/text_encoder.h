#pragma once
/// RNN text encoder: embedding, LSTM or GRU (layers, bidirectional), padding-aware pooling.
/// Sequences are packed, so the encoding of a sequence never depends on how much it was padded.
/// On the CPU the RNN runs on mmintent's fused kernel (`rnn_kernel`, models/detail/fused_rnn.h).

#include "mmintent/models/detail/recurrent.h"
#include "mmintent/models/modality_encoder.h"

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <utility>

namespace mmintent {

/// Example: `TextEncoderOptions().vocab_size(1000).type("gru").pooling("max")`.
struct TextEncoderOptions {
  /// Number of token ids, padding (id 0) included. Must be set before construction.
  TORCH_ARG(int64_t, vocab_size) = 0;
  /// "lstm" or "gru".
  TORCH_ARG(std::string, type) = "lstm";
  TORCH_ARG(int64_t, embedding_dim) = 64;
  TORCH_ARG(int64_t, hidden_size) = 128;
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(bool, bidirectional) = true;
  /// Dropout on the embeddings and between RNN layers.
  TORCH_ARG(double, dropout) = 0.0;
  /// "last" (final hidden states), "mean" or "max" over the real (unpadded) time steps.
  TORCH_ARG(std::string, pooling) = "mean";
  /// How the RNN runs. "fused": mmintent's CPU kernel (models/detail/fused_rnn.h: one matrix product
  /// and a few element-wise passes per step, a hand-written backward); "native": LibTorch's
  /// LSTM/GRU (cuDNN on CUDA). "auto": fused where it can run (CPU, float32/float64; under
  /// bf16 autocast its matrix products take bf16 operands), native elsewhere. Both compute the
  /// same function with the same parameters.
  TORCH_ARG(std::string, rnn_kernel) = "auto";
};

class TextEncoderImpl : public ModalityEncoderImpl {
 public:
  explicit TextEncoderImpl(TextEncoderOptions options);
  void reset();
  /// token_ids [B,T] int64 (0 = padding), lengths [B] int64 on the CPU -> [B,output_dim()].
  /// A length of 0 (missing text) gives a defined but meaningless row: callers mask it.
  torch::Tensor forward(const torch::Tensor& token_ids, const torch::Tensor& lengths);
  /// The "text" modality: forward(input.data, input.lengths).
  torch::Tensor encode(const ModalityInput& input) override { return forward(input.data, input.lengths); }
  int64_t output_dim() const override;

  TextEncoderOptions options;

 private:
  torch::nn::Embedding embedding_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  detail::RecurrentPooling rnn_;
};
TORCH_MODULE(TextEncoder);

}  // namespace mmintent
