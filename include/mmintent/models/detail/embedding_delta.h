#pragma once
/// How adversarial training (training/adversarial.h) perturbs a text encoder's token embeddings
/// without changing its forward signature: a scope on the calling thread, like
/// models/detail/weight_view.h's. While one is alive, TextEncoder::forward adds its delta
/// [B,T,D] to the embeddings of its token ids [B,T] (before the embedding dropout); the
/// delta may require grad, so that a backward pass gives the loss's gradient with respect to
/// the embeddings.

#include <ATen/core/Tensor.h>

namespace mmintent::detail {

/// While alive, text encoders on this thread add `*delta` to their token embeddings (an
/// undefined tensor adds nothing). Scopes nest: the inner one wins until it ends.
class EmbeddingDeltaScope {
 public:
  explicit EmbeddingDeltaScope(const at::Tensor* delta);
  ~EmbeddingDeltaScope();
  EmbeddingDeltaScope(const EmbeddingDeltaScope&) = delete;
  EmbeddingDeltaScope& operator=(const EmbeddingDeltaScope&) = delete;

 private:
  const at::Tensor* previous_;
};

/// The delta in force on this thread, or an undefined tensor.
at::Tensor embedding_delta();

}  // namespace mmintent::detail
