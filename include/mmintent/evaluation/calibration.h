#pragma once
/// Confidence calibration: temperature scaling (Guo et al., 2017) fitted on a validation split,
/// the expected calibration error (ECE) and the negative log-likelihood (NLL) it is judged by.
/// Plain std::vector inputs (no LibTorch types): scores are row-major [N,K] matrices of doubles.

#include <cstdint>
#include <string>
#include <vector>

namespace mmintent {

/// The `calibration:` config section. Usage: `calibration: {enabled: true, method: temperature}`.
struct CalibrationOptions {
  /// Fit after training when the run has a validation split; false: probabilities stay raw.
  bool enabled = true;
  /// temperature | split | none. split (a trained out-of-scope class): the out-of-scope decision
  /// and the intents within scope calibrated apart (SplitCalibration below).
  std::string method = "temperature";
  /// method split: the out-of-scope share of the traffic the probabilities are for, in (0, 1);
  /// -1: the fitting split's. `mmintent calibrate --oos-share-from` estimates it on unlabelled traffic.
  double oos_share = -1;
};

/// Bounds and tolerance of the 1-D search for the temperature.
struct TemperatureFitOptions {
  double min_temperature = 0.01;  ///< the search interval [min, max] (T > 0)
  double max_temperature = 100.0;
  double tolerance = 1e-9;  ///< on log T
  int64_t max_evaluations = 200;
};

struct TemperatureFit {
  double temperature = 1.0;  ///< the NLL-optimal T on the fitting samples
  double nll_before = 0;     ///< mean NLL at T = 1 (nats)
  double nll_after = 0;      ///< mean NLL at the fitted T
  int64_t count = 0;         ///< samples used (gold label one of the K classes)
  int64_t evaluations = 0;   ///< NLL evaluations spent by the search
  /// The optimum lies on a bound of the search interval (e.g. a separable fitting split, whose
  /// NLL keeps falling as T -> 0); the bound is returned.
  bool at_bound = false;
};

/// Mean NLL of softmax(logits / T): logits row-major [N,K]; rows whose label is outside [0,K)
/// (e.g. out-of-scope samples that are not a trained class) are skipped; 0 when none is left.
/// Throws mmintent::Error on inconsistent sizes or T <= 0.
double temperature_nll(const std::vector<double>& logits, int64_t num_classes,
                       const std::vector<int64_t>& labels, double temperature);

/// The T > 0 that minimises temperature_nll: Brent's method (golden section with parabolic
/// steps) on u = log T over [log min, log max]. The NLL is convex in 1/T, hence unimodal in
/// log T, so the search converges to the global optimum in the interval. With no usable row
/// the result is T = 1.
TemperatureFit fit_temperature(const std::vector<double>& logits, int64_t num_classes,
                               const std::vector<int64_t>& labels,
                               const TemperatureFitOptions& options = {});

/// softmax(logits / T) row by row, computed stably in double; [N,K] row-major.
std::vector<double> softmax_with_temperature(const std::vector<double>& logits, int64_t num_classes,
                                             double temperature);

/// log(max(p, 1e-30)): probabilities as logits (softmax is shift-invariant per row, so
/// softmax(log(p) / T) is temperature scaling of the logits behind p); the floor only touches
/// probabilities a float softmax has flushed to 0.
std::vector<double> logits_from_probabilities(const std::vector<double>& probs);

/// Split calibration (calibration.method: split), for a trained out-of-scope class whose share
/// differs between the fitting split and the traffic served: the choice among in-scope intents
/// and the out-of-scope decision are calibrated apart,
///   P(oos | x) = sigmoid(slope * s(x) + intercept + logit(share) - logit(fitted_share)),
///   P(k | x)   = (1 - P(oos | x)) * softmax(in-scope logits / in_scope_temperature)_k,
/// with s(x) = z_oos - logsumexp(in-scope z): the model's own log-odds of out-of-scope. slope and
/// intercept are Platt scaling fitted on the fitting split, whose out-of-scope share is
/// fitted_share; `share` is the traffic's (a prior shift, Saerens et al. 2002: the fitting
/// split's by default, one given, or estimated on unlabelled traffic by estimate_oos_share).
struct SplitCalibration {
  int64_t oos_index = -1;  ///< the out-of-scope column
  double in_scope_temperature = 1.0;
  double slope = 1.0, intercept = 0.0;
  double fitted_share = 0.5;  ///< out-of-scope share of the fitting split, in (0, 1)
  double share = 0.5;         ///< the out-of-scope share the probabilities are for, in (0, 1)
  /// Where `share` comes from: the fitting split's name, calibration.oos_share, --oos-share, or
  /// "estimated on PATH".
  std::string share_from;
  int64_t count = 0;          ///< fitting samples
  int64_t oos_count = 0;      ///< of which out of scope
  TemperatureFit in_scope_fit;  ///< the in-scope temperature's search
};

/// Fits a SplitCalibration on logits [N,K] (or log-probabilities) with gold labels; rows whose
/// label is outside [0,K) are skipped. Throws mmintent::Error when oos_index is not a column,
/// K < 3, or the usable rows hold no out-of-scope or no in-scope sample (nothing to fit on).
/// `share` is set to the fitted share.
SplitCalibration fit_split_calibration(const std::vector<double>& logits, int64_t num_classes,
                                       const std::vector<int64_t>& labels, int64_t oos_index,
                                       const TemperatureFitOptions& options = {});

/// The calibrated probabilities [N,K] row-major of logits [N,K] under `fit` (fit.share).
std::vector<double> split_calibrated(const std::vector<double>& logits, int64_t num_classes,
                                     const SplitCalibration& fit);

/// The out-of-scope share of unlabelled inputs given their logits [N,K]: the EM prior
/// re-estimation of Saerens, Latinne & Decaestecker (2002) on P(oos | x) of `fit`, starting at
/// fit.fitted_share; kept within [1e-4, 1 - 1e-4]. Throws mmintent::Error when there is no row.
double estimate_oos_share(const std::vector<double>& logits, int64_t num_classes, const SplitCalibration& fit,
                          int64_t max_iterations = 1000, double tolerance = 1e-9);

/// One equal-width confidence bin (lower, upper] of a reliability diagram.
struct ReliabilityBin {
  double lower = 0, upper = 0;
  int64_t count = 0;
  double accuracy = 0;    ///< share of correct predictions in the bin (0 when empty)
  double confidence = 0;  ///< mean top probability in the bin (0 when empty)
};

struct CalibrationMetrics {
  int64_t count = 0;
  double accuracy = 0;
  /// Expected calibration error: sum_b |B_b| / n * |acc_b - conf_b|.
  double ece = 0;
  double nll = 0;  ///< mean NLL of the gold class (nats); 0 when no row has a gold class
  std::vector<ReliabilityBin> bins;
};

/// Reliability bins and ECE from per-sample confidences (top probabilities) and correctness:
/// `num_bins` equal-width bins (b/n, (b+1)/n], the first one closed at 0 (the convention of
/// Guo et al.'s reference code). `nll` is left 0. Throws mmintent::Error on size mismatch or
/// num_bins < 1.
CalibrationMetrics reliability(const std::vector<double>& confidences,
                               const std::vector<bool>& correct, int64_t num_bins = 15);

/// ECE, accuracy, NLL and bins of probabilities [N,K] row-major against gold labels: rows
/// whose label is outside [0,K) are left out (out-of-scope samples that are not a class); the
/// prediction is the arg-max (first index on ties); NLL floors the gold probability at 1e-30.
CalibrationMetrics calibration_metrics(const std::vector<double>& probs, int64_t num_classes,
                                       const std::vector<int64_t>& labels, int64_t num_bins = 15);

/// What a run's calibration.json holds (read and written by run/serving.h).
struct CalibrationFile {
  std::string method = "none";  ///< temperature | split | none
  double temperature = 1.0;     ///< method temperature
  std::string fitted_on;  ///< the split (or manifest) the calibration was fitted on
  TemperatureFit fit;     ///< the temperature search's figures (count, NLL before/after, bound)
  SplitCalibration split;  ///< method split
};

/// Probabilities [N,K] row-major as `calibration` serves them: temperature scaling, split
/// calibration (of log p), or unchanged (none).
std::vector<double> calibrate_probabilities(const CalibrationFile& calibration, const std::vector<double>& probs,
                                            int64_t num_classes);

}  // namespace mmintent
