#pragma once
/// Classification metrics from predicted probabilities: accuracy, top-k accuracy, per-class
/// precision/recall/F1/support, macro and weighted F1, and the confusion matrix.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <vector>

namespace mmintent {

struct ClassMetrics {
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;    ///< gold samples of the class
  int64_t predicted = 0;  ///< samples predicted as the class
};

struct ClassificationMetrics {
  int64_t count = 0;
  double accuracy = 0;
  std::map<int64_t, double> top_k;  ///< k -> top-k accuracy
  /// Macro averages run over the classes present in the gold labels or the predictions (the
  /// scikit-learn convention), so a class absent from a split does not count as a zero.
  double macro_precision = 0, macro_recall = 0, macro_f1 = 0;
  double weighted_f1 = 0;  ///< per-class F1 weighted by support
  std::vector<ClassMetrics> per_class;
  std::vector<std::vector<int64_t>> confusion;  ///< [gold][predicted] counts
};

/// probs [N,K] (any float type, any device), labels [N] int64. `top_ks` lists the k values.
ClassificationMetrics compute_metrics(const at::Tensor& probs, const at::Tensor& labels,
                                      const std::vector<int64_t>& top_ks = {1, 3});

/// The same from a confusion matrix ([gold][predicted] counts, K x K); top-k is only k = 1.
/// Counts add up across shards, so this is how a data-parallel run gets exact metrics.
ClassificationMetrics metrics_from_confusion(std::vector<std::vector<int64_t>> confusion);

/// The same from hard predictions; top-k is only k = 1.
ClassificationMetrics compute_metrics(const std::vector<int64_t>& predicted,
                                      const std::vector<int64_t>& gold, int64_t num_classes);

}  // namespace mmintent
