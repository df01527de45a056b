#pragma once
/// Cross-entropy with optional label smoothing and class weights.

#include <ATen/core/Tensor.h>

#include <vector>

namespace mmintent {

struct LossOptions {
  double label_smoothing = 0.0;
  /// One weight per class, or empty for none. Each sample's loss is multiplied by the weight of
  /// its gold class; the trainer then averages over samples (not over weights), which keeps
  /// gradient accumulation exact.
  std::vector<double> class_weights;
};

/// Per-sample losses [B] for logits [B,K] and labels [B].
at::Tensor per_sample_loss(const at::Tensor& logits, const at::Tensor& labels,
                           const LossOptions& options);

}  // namespace mmintent
