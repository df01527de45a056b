#include "mmintent/models/text_encoder.h"

#include <torch/nn/utils/rnn.h>
#include <torch/torch.h>

namespace mmintent {
namespace rnn_utils = torch::nn::utils::rnn;

TextEncoderImpl::TextEncoderImpl(TextEncoderOptions options_) : options(std::move(options_)) {
  reset();
}

void TextEncoderImpl::reset() {
  TORCH_CHECK(options.vocab_size() > 1, "TextEncoder: vocab_size must be > 1, got ",
              options.vocab_size());
  TORCH_CHECK(options.type() == "lstm" || options.type() == "gru",
              "TextEncoder: type must be lstm or gru, got '", options.type(), "'");
  TORCH_CHECK(options.pooling() == "last" || options.pooling() == "mean" ||
                  options.pooling() == "max",
              "TextEncoder: pooling must be last, mean or max, got '", options.pooling(), "'");
  TORCH_CHECK(options.embedding_dim() > 0 && options.hidden_size() > 0 &&
                  options.num_layers() > 0,
              "TextEncoder: embedding_dim, hidden_size and num_layers must be > 0");

  embedding_ = register_module(
      "embedding", torch::nn::Embedding(torch::nn::EmbeddingOptions(options.vocab_size(),
                                                                    options.embedding_dim())
                                            .padding_idx(0)));
  dropout_ = register_module("dropout", torch::nn::Dropout(options.dropout()));
  const double between = options.num_layers() > 1 ? options.dropout() : 0.0;
  if (options.type() == "lstm") {
    lstm_ = register_module(
        "rnn", torch::nn::LSTM(torch::nn::LSTMOptions(options.embedding_dim(), options.hidden_size())
                                   .num_layers(options.num_layers())
                                   .bidirectional(options.bidirectional())
                                   .batch_first(true)
                                   .dropout(between)));
  } else {
    gru_ = register_module(
        "rnn", torch::nn::GRU(torch::nn::GRUOptions(options.embedding_dim(), options.hidden_size())
                                  .num_layers(options.num_layers())
                                  .bidirectional(options.bidirectional())
                                  .batch_first(true)
                                  .dropout(between)));
  }
}

int64_t TextEncoderImpl::output_dim() const {
  return options.hidden_size() * (options.bidirectional() ? 2 : 1);
}

torch::Tensor TextEncoderImpl::forward(const torch::Tensor& token_ids,
                                       const torch::Tensor& lengths) {
  TORCH_CHECK(token_ids.dim() == 2, "TextEncoder: expected token_ids [B,T], got ",
              token_ids.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == token_ids.size(0),
              "TextEncoder: lengths must be [B]");
  // Empty texts are packed as one padding token; the caller masks their encoding.
  auto safe_lengths = lengths.to(torch::kCPU, torch::kLong).clamp_min(1);
  auto x = dropout_->forward(embedding_->forward(token_ids));
  auto packed = rnn_utils::pack_padded_sequence(x, safe_lengths, /*batch_first=*/true,
                                                /*enforce_sorted=*/false);
  torch::Tensor h_n;
  auto out = [&] {
    if (lstm_) {
      auto result = lstm_->forward_with_packed_input(packed);
      h_n = std::get<0>(std::get<1>(result));
      return std::get<0>(result);
    }
    auto result = gru_->forward_with_packed_input(packed);
    h_n = std::get<1>(result);
    return std::get<0>(result);
  }();

  if (options.pooling() == "last") {
    // h_n: [layers * dirs, B, H]; the last layer's directions, concatenated.
    const int64_t dirs = options.bidirectional() ? 2 : 1;
    auto last = h_n.view({options.num_layers(), dirs, h_n.size(1), h_n.size(2)})[-1];
    return dirs == 2 ? torch::cat({last[0], last[1]}, 1) : last[0];
  }

  auto unpacked = rnn_utils::pad_packed_sequence(out, /*batch_first=*/true);
  auto seq = std::get<0>(unpacked);  // [B, T', D]
  const auto steps = torch::arange(seq.size(1), safe_lengths.options());
  auto mask = (steps.unsqueeze(0) < safe_lengths.unsqueeze(1)).to(seq.device());  // [B, T']
  if (options.pooling() == "mean") {
    auto m = mask.unsqueeze(2).to(seq.scalar_type());
    return (seq * m).sum(1) / m.sum(1);
  }
  return seq.masked_fill(~mask.unsqueeze(2), -std::numeric_limits<float>::infinity())
      .amax(1);
}

}  // namespace mmintent
