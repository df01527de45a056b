#include "mmintent/models/text_encoder.h"

#include "mmintent/models/detail/embedding_delta.h"

#include <torch/torch.h>

#include <vector>

namespace mmintent {

TextEncoderImpl::TextEncoderImpl(TextEncoderOptions options_) : options(std::move(options_)) {
  reset();
}

void TextEncoderImpl::reset() {
  TORCH_CHECK(options.vocab_size() > 1, "TextEncoder: vocab_size must be > 1, got ",
              options.vocab_size());
  TORCH_CHECK(options.embedding_dim() > 0, "TextEncoder: embedding_dim must be > 0");

  embedding_ = register_module(
      "embedding", torch::nn::Embedding(torch::nn::EmbeddingOptions(options.vocab_size(),
                                                                    options.embedding_dim())
                                            .padding_idx(0)));
  dropout_ = register_module("dropout", torch::nn::Dropout(options.dropout()));
  detail::RecurrentOptions rnn;
  rnn.input_size = options.embedding_dim();
  rnn.type = options.type();
  rnn.hidden_size = options.hidden_size();
  rnn.num_layers = options.num_layers();
  rnn.bidirectional = options.bidirectional();
  rnn.dropout = options.dropout();
  rnn.pooling = options.pooling();
  rnn.rnn_kernel = options.rnn_kernel();
  rnn_ = detail::RecurrentPooling(*this, std::move(rnn), "TextEncoder");
}

int64_t TextEncoderImpl::output_dim() const { return rnn_.output_dim(); }

torch::Tensor TextEncoderImpl::forward(const torch::Tensor& token_ids,
                                       const torch::Tensor& lengths) {
  TORCH_CHECK(token_ids.dim() == 2, "TextEncoder: expected token_ids [B,T], got ",
              token_ids.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == token_ids.size(0),
              "TextEncoder: lengths must be [B]");
  // Empty texts are packed as one padding token; the caller masks their encoding.
  auto x = embedding_->forward(token_ids);
  // Adversarial training's perturbation of the embeddings (training/adversarial.h), if any.
  if (const auto delta = detail::embedding_delta(); delta.defined()) {
    TORCH_CHECK(delta.sizes() == x.sizes(), "TextEncoder: an embedding delta of shape ", delta.sizes(),
                " for embeddings of shape ", x.sizes());
    x = x + delta.to(x.scalar_type());
  }
  x = dropout_->forward(x);
  return rnn_.forward(x, lengths, is_training());
}

}  // namespace mmintent
