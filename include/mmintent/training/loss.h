#pragma once
/// The training loss: cross-entropy against hard labels (with optional label smoothing and class
/// weights), cross-entropy against soft targets, an unlikelihood penalty for rejected intents,
/// and off-policy (bandit) objectives for logged samples. Hard, soft, rejected and logged samples
/// may mix in one batch.

#include "mmintent/core/batch.h"

#include <ATen/core/Tensor.h>

#include <string>
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

  /// How logged samples (Batch::shown >= 0) learn. supervised: as their labels say (an
  /// acceptance as its label, a rejection through rejection_weight); `shown` is ignored.
  /// ips / snips: from the reward r = [label == shown] of the intent shown with propensity p0,
  /// through w = pi(shown | x) * min(1 / p0, max_inverse_propensity), pi the model's softmax:
  ///   ips:   (baseline - r) * w per logged sample (clipped inverse propensity scoring; a
  ///          baseline > 0 lets rejections push their intent down, BanditNet's translation);
  ///   snips: -r * w / mean(w over the batch's logged samples) (the self-normalised estimator,
  ///          whose gradient is that of ips with the batch's own estimate as baseline).
  /// A corrected sample (label >= 0, label != shown) also learns its label by cross-entropy; an
  /// accepted or rejected one only through the reward. Not read from train.loss; `mmintent
  /// tune` sets it from tune.objective.
  enum class Objective { supervised, ips, snips };
  Objective objective = Objective::supervised;
  double max_inverse_propensity = 100;  ///< clip of 1 / p0 (>= 1)
  double baseline = 0;                  ///< ips's translation, in [0, 1]

  /// Knowledge distillation (Hinton et al. 2015), for samples with Batch::teacher rows q (the
  /// teacher's probabilities at temperature T): their loss becomes
  ///   (1 - alpha) x (the loss above) + alpha x T^2 x KL(q || softmax(logits / T)).
  /// alpha 0: no distillation (the teacher rows are ignored). Set from train.distill.
  double distill_alpha = 0;
  double distill_temperature = 1;  ///< T > 0
};

/// "supervised" | "ips" | "snips"; throws Error naming the accepted values for others.
LossOptions::Objective parse_objective(const std::string& name);

/// Per-sample losses [B] for logits [B,K] and hard labels [B] (all in [0, K)).
at::Tensor per_sample_loss(const at::Tensor& logits, const at::Tensor& labels,
                           const LossOptions& options);

/// Per-sample losses [B] for logits [B,K] and the targets of `batch` (see Batch): for a hard
/// sample (label >= 0, zero soft row) the smoothed, class-weighted cross-entropy of its label;
/// for a soft sample -sum_k q_k log p_k times its expected class weight (equal to the KL
/// divergence KL(q || p) up to the entropy of q, a constant); plus, where `rejected[i]` = r >= 0,
/// rejection_weight * -log(1 - p_r); with an off-policy objective, logged samples as
/// LossOptions::objective says; with Batch::teacher and distill_alpha > 0, mixed with the
/// distillation term (LossOptions::distill_alpha). A sample with label -1, no soft row, no rejection and nothing
/// logged contributes 0. Throws Error for out-of-range options or mismatched shapes.
at::Tensor per_sample_loss(const at::Tensor& logits, const Batch& batch,
                           const LossOptions& options);

}  // namespace mmintent
