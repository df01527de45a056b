#include "mmintent/models/detail/embedding_delta.h"

namespace mmintent::detail {
namespace {
thread_local const at::Tensor* current = nullptr;
}  // namespace

EmbeddingDeltaScope::EmbeddingDeltaScope(const at::Tensor* delta) : previous_(current) { current = delta; }
EmbeddingDeltaScope::~EmbeddingDeltaScope() { current = previous_; }

at::Tensor embedding_delta() { return current ? *current : at::Tensor(); }

}  // namespace mmintent::detail
