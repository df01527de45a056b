#include "mmintent/models/detail/weight_view.h"

namespace mmintent::detail {
namespace {
thread_local const WeightView* current = nullptr;
}  // namespace

WeightViewScope::WeightViewScope(const WeightView* view) : previous_(current) { current = view; }
WeightViewScope::~WeightViewScope() { current = previous_; }

bool weights_viewed() { return current != nullptr; }

at::Tensor viewed_weight(const at::Tensor& w) {
  if (!current) return w;
  auto viewed = (*current)(w);
  return viewed.defined() ? viewed : w;
}

}  // namespace mmintent::detail
