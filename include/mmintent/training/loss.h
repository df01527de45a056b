#pragma once
/// The training loss: cross-entropy against hard labels (with optional label smoothing and class
/// weights), cross-entropy against soft targets, and an unlikelihood penalty for rejected
/// intents. Hard, soft and rejected samples may mix in one batch.

#include "mmintent/core/batch.h"

#include <ATen/core/Tensor.h>

#include <vector>

namespace mmintent {

struct LossOptions {
  /// Applied to hard labels only; a soft target is already the distribution to learn.
  double label_smoothing = 0.0;
  /// One weight per class, or empty for none. Each sample's loss is multiplied by the weight of
  /// its gold class (a soft target: the expected weight sum_k q_k w_k, which is w_y for a
  /// one-hot q); the trainer then averages over samples (not over weights), which keeps
  /// gradient accumulation exact. The rejection term is not class-weighted.
  std::vector<double> class_weights;
  /// Weight of the unlikelihood term -log(1 - p_r) added for a sample whose intent r a person
  /// rejected (Batch::rejected). Not read from train.loss; `mmintent tune` sets it.
  double rejection_weight = 1.0;
};

/// Per-sample losses [B] for logits [B,K] and hard labels [B] (all in [0, K)).
at::Tensor per_sample_loss(const at::Tensor& logits, const at::Tensor& labels,
                           const LossOptions& options);

/// Per-sample losses [B] for logits [B,K] and the targets of `batch` (see Batch): for a hard
/// sample (label >= 0, zero soft row) the smoothed, class-weighted cross-entropy of its label;
/// for a soft sample -sum_k q_k log p_k times its expected class weight (equal to the KL
/// divergence KL(q || p) up to the entropy of q, a constant); plus, where `rejected[i]` = r >= 0,
/// rejection_weight * -log(1 - p_r). A sample with label -1, no soft row and no rejection
/// contributes 0. Throws Error for out-of-range options or mismatched shapes.
at::Tensor per_sample_loss(const at::Tensor& logits, const Batch& batch,
                           const LossOptions& options);

}  // namespace mmintent
