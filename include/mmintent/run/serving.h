#pragma once
/// What a run serves beyond its weights, and how it recognises out-of-scope requests: read
/// from and written to the run directory (calibration.json, decision.json, oos.json) for the
/// evaluator, `calibrate`, `tune` and the Predictor alike.

#include "mmintent/evaluation/calibration.h"
#include "mmintent/evaluation/out_of_scope.h"
#include "mmintent/policy/decision.h"
#include "mmintent/run/run_directory.h"

#include <memory>
#include <string>
#include <vector>

namespace mmintent {

struct Config;
class LabelMap;

/// The calibration (calibration.json; none without one) and the decision thresholds
/// (decision.json; without one the config's fixed values).
struct ServingSetup {
  CalibrationFile calibration;  ///< what calibrate_probabilities applies (method none: nothing)
  DecisionOptions decision;  ///< as configured (-1: chosen on val)
  DecisionThresholds thresholds;  ///< in force
};

/// How a run recognises out-of-scope samples: from the config, and for methods threshold and
/// both the threshold (given, or chosen on the validation split and kept in oos.json) on the
/// score oos.score names (with, for mahalanobis, its fit: oos_mahalanobis.pt).
struct OosSetup {
  bool enabled = false;
  bool threshold_method = false;  ///< method threshold: out-of-scope is not a trained class
  bool thresholded = false;       ///< methods threshold and both: a score under `threshold` is out of scope
  std::string method = "class";   ///< class | threshold | both
  std::string score = "max_prob"; ///< max_prob | energy | mahalanobis (methods threshold and both)
  std::string label;
  int64_t index = -1;     ///< class index of out-of-scope samples among the gold labels
  double threshold = -1;  ///< methods threshold and both
  /// score mahalanobis: the class means and shared precision, fitted on data.train.
  std::shared_ptr<const MahalanobisFit> mahalanobis;

  /// The out-of-scope class among the model's outputs (methods class and both), else -1.
  int64_t trained_class() const { return enabled && !threshold_method ? index : -1; }
  /// Whether the score needs the fused features (forward_with_features).
  bool needs_features() const { return thresholded && score == "mahalanobis"; }
};

/// The score oos.score names, per row (higher: more in scope), [N] double: max_prob over the
/// in-scope columns of the calibrated probabilities `probs` [N,K], energy over `logits` [N,K],
/// mahalanobis over `features` [N,D] with oos.mahalanobis. Throws Error when what the score
/// needs is missing.
at::Tensor oos_scores(const OosSetup& oos, const at::Tensor& probs, const at::Tensor& logits,
                      const at::Tensor& features);

/// Per row, whether the threshold rejects it (score under oos.threshold); all false for the
/// class method. A row whose arg-max is the trained out-of-scope class is out of scope apart
/// from this.
std::vector<bool> oos_rejections(const OosSetup& oos, const at::Tensor& probs, const at::Tensor& logits,
                                 const at::Tensor& features);

/// From the config and the run's labels. Throws ConfigError when method class names a label
/// that is not among the training labels.
OosSetup oos_setup(const Config& config, const LabelMap& labels);

/// Reads calibration.json and decision.json of a finished run. Throws mmintent::Error naming
/// the file when one is broken, or when decision.json is missing while the config chooses a
/// threshold on val (-1).
ServingSetup load_serving(const RunDirectory& run, const Config& config);
/// oos_setup with, for methods threshold and both, the threshold of oos.json and for score
/// mahalanobis its fit (oos_mahalanobis.pt); Error naming the file when one is missing or
/// broken.
OosSetup load_oos(const RunDirectory& run, const Config& config, const LabelMap& labels);

/// Error naming calibration.json when its split calibration does not calibrate the run's trained
/// out-of-scope class (a hand-edited file, or one of another run's labels).
void check_calibration(const RunDirectory& run, const ServingSetup& serving, const OosSetup& oos);

/// calibration.json (evaluation/calibration.h's CalibrationFile); a run without one gives
/// method "none" and T = 1.
CalibrationFile load_calibration(const RunDirectory& run);
void save_calibration(const RunDirectory& run, const CalibrationFile& calibration);
/// Removes calibration.json (the run serves T = 1).
void remove_calibration(const RunDirectory& run);
/// decision.json: the thresholds in force and whether they were chosen on val.
void save_decision(const RunDirectory& run, const ServingSetup& serving,
                   const ChosenThresholds& chosen);
/// oos.json, for a run with out-of-scope handling (nothing otherwise), and oos_mahalanobis.pt
/// when the score is mahalanobis (removed otherwise). Throws Error when that score has no fit.
void save_oos(const RunDirectory& run, const OosSetup& oos);

}  // namespace mmintent
