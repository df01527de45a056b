#pragma once
/// How a low-rank adapter (models/low_rank.h) shows a module the weight it should use in a
/// forward pass, W + delta, without touching W: a scope on the calling thread, like LibTorch's
/// no-grad and autocast guards. Modules that read their weights themselves (the recurrent
/// layers, models/detail/recurrent.h) ask `viewed_weight`; LibTorch's linear layers, whose
/// forward reads their `weight` member, get theirs swapped in by the adapter instead.

#include <ATen/core/Tensor.h>

#include <functional>

namespace mmintent::detail {

/// The weight to use in place of `w`, or an undefined tensor to use `w` itself.
using WeightView = std::function<at::Tensor(const at::Tensor& w)>;

/// While alive, `viewed_weight` on this thread answers through `view` (scopes nest: the inner
/// one wins until it ends).
class WeightViewScope {
 public:
  explicit WeightViewScope(const WeightView* view);
  ~WeightViewScope();
  WeightViewScope(const WeightViewScope&) = delete;
  WeightViewScope& operator=(const WeightViewScope&) = delete;

 private:
  const WeightView* previous_;
};

/// Whether a view is in force on this thread.
bool weights_viewed();
/// `w` as the view in force shows it (`w` itself without one, or when the view leaves it).
at::Tensor viewed_weight(const at::Tensor& w);

}  // namespace mmintent::detail
