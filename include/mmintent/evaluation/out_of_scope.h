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
/// threshold. Ties go to the lowest threshold. Returns a value in [0, 1] (0: rejecting nothing
/// is best): choose_score_threshold below over the top probabilities and the arg-max.
double choose_oos_threshold(const at::Tensor& probs, const std::vector<int64_t>& gold,
                            int64_t oos_index);

/// The highest threshold whose in-scope accuracy on (`probs`, `gold`) is at most `max_loss`
/// (a fraction: 0.01 is one point) under the in-scope accuracy without a threshold: it rejects
/// at most floor(max_loss x in-scope samples) of the correctly classified in-scope samples,
/// those of lowest top probability, and so as many out-of-scope samples as that price buys.
/// Out-of-scope samples (gold == oos_index) are not needed; 1 when it may reject them all.
/// Throws Error when there is no in-scope sample or max_loss is outside [0, 1).
double choose_oos_threshold_for_loss(const at::Tensor& probs, const std::vector<int64_t>& gold,
                                     int64_t oos_index, double max_loss);

/// The same two choices for any score (higher: more in scope; a sample is rejected when its
/// score is under the threshold) over classes already `predicted` without a threshold (the
/// arg-max; `oos_index` where a trained out-of-scope class wins, and such a sample stays out of
/// scope at any threshold). choose_score_threshold maximises the accuracy over all samples as
/// choose_oos_threshold does (ties: the lowest threshold; the lowest score when rejecting
/// nothing is best); choose_score_threshold_for_loss rejects at most floor(max_loss x in-scope
/// samples) correctly classified in-scope ones (above every score when it may reject them
/// all). Throw Error on a size mismatch, no sample, or (for_loss) no in-scope sample or
/// max_loss outside [0, 1).
double choose_score_threshold(const std::vector<double>& scores, const std::vector<int64_t>& predicted,
                              const std::vector<int64_t>& gold, int64_t oos_index);
double choose_score_threshold_for_loss(const std::vector<double>& scores, const std::vector<int64_t>& predicted,
                                       const std::vector<int64_t>& gold, int64_t oos_index, double max_loss);

// ---- Out-of-scope scores: how in scope a sample looks (higher: more in scope). ----

/// The largest probability among the in-scope classes: the columns of probs [N,K] other than
/// `oos_index` (which may be past K when out-of-scope is not a class).
at::Tensor max_prob_scores(const at::Tensor& probs, int64_t oos_index);

/// The negative free energy T logsumexp(logits / T) over the in-scope columns (Liu et al.
/// 2020): logits [N,K].
at::Tensor energy_scores(const at::Tensor& logits, int64_t oos_index, double temperature = 1);

/// Class means and a shared covariance of features, fitted on in-scope training samples (Lee
/// et al. 2018): the Mahalanobis score of a feature vector is minus its squared Mahalanobis
/// distance to the nearest class mean.
struct MahalanobisFit {
  at::Tensor means;      ///< [C, D] double, one row per fitted class (classes without samples left out)
  at::Tensor precision;  ///< [D, D] double: the inverse of the shared covariance (+ a ridge)
};

/// Fits on features [N,D] with labels; samples labelled `oos_index` (or outside [0, K)) are
/// left out. The covariance gets a ridge of 1e-6 times its mean diagonal so that it inverts.
/// Throws Error with no in-scope sample.
MahalanobisFit fit_mahalanobis(const at::Tensor& features, const std::vector<int64_t>& labels, int64_t oos_index);

/// -min_c (f - mu_c)^T P (f - mu_c) per row of features [N,D]: [N] double.
at::Tensor mahalanobis_scores(const MahalanobisFit& fit, const at::Tensor& features);

/// How well a score tells in-scope from out-of-scope samples, in-scope the positive class.
struct OosDetection {
  int64_t in_scope = 0, oos = 0;
  /// The probability that a random in-scope sample scores above a random out-of-scope one
  /// (ties count half).
  double auroc = 0;
  /// The share of out-of-scope samples scoring at or above the threshold that keeps 95% of
  /// the in-scope samples (lower is better).
  double fpr_at_95_tpr = 0;
};

/// `scores` [N] (any floating type) against `gold` (out-of-scope: `oos_index`). Throws Error
/// unless both kinds of sample are present.
OosDetection oos_detection(const at::Tensor& scores, const std::vector<int64_t>& gold, int64_t oos_index);

}  // namespace mmintent
