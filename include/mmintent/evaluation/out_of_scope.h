#pragma once
/// Out-of-scope (OOS) evaluation as Larson et al. (2019) define it for CLINC150: in-scope
/// accuracy (an in-scope sample is right only when its intent is predicted; rejecting it as
/// out-of-scope is wrong), out-of-scope recall and precision. Two ways to predict OOS:
/// "class" (OOS is one more trained class) and "threshold" (a sample whose top probability is
/// under a threshold chosen on the validation split is out-of-scope).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace mmintent {

struct OosMetrics {
  int64_t in_scope_count = 0;
  int64_t oos_count = 0;
  double in_scope_accuracy = 0;  ///< correct intent among in-scope samples
  double oos_recall = 0;         ///< out-of-scope samples predicted as out-of-scope
  double oos_precision = 0;      ///< predicted out-of-scope that are out-of-scope
  double oos_f1 = 0;
  double accuracy = 0;           ///< over all samples, out-of-scope counted as one class
};

/// `predicted` and `gold` are class indices; `oos_index` marks out-of-scope in both (it may be
/// one past the model's classes when OOS is not a trained class).
OosMetrics oos_metrics(const std::vector<int64_t>& predicted, const std::vector<int64_t>& gold,
                       int64_t oos_index);

/// Arg-max decisions, replaced by `oos_index` where the top probability is under `threshold`.
/// probs [N,K].
std::vector<int64_t> threshold_decisions(const at::Tensor& probs, double threshold,
                                         int64_t oos_index);

/// The threshold that maximises the accuracy over all of (`probs`, `gold`), out-of-scope
/// counted as a class (the validation criterion of Larson et al.): a sample is right when it is
/// in-scope, above the threshold and its arg-max is its intent, or out-of-scope and under the
/// threshold. Ties go to the lowest threshold. Returns a value in [0, 1].
double choose_oos_threshold(const at::Tensor& probs, const std::vector<int64_t>& gold,
                            int64_t oos_index);

}  // namespace mmintent
