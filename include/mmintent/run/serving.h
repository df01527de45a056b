#pragma once
/// What a run serves beyond its weights, and how it recognises out-of-scope requests: read
/// from and written to the run directory (calibration.json, decision.json, oos.json) for the
/// evaluator, `calibrate`, `tune` and the Predictor alike.

#include "mmintent/evaluation/calibration.h"
#include "mmintent/policy/decision.h"
#include "mmintent/run/run_directory.h"

#include <string>

namespace mmintent {

struct Config;
class LabelMap;

/// The temperature (calibration.json; T = 1 without one) and the decision thresholds
/// (decision.json; without one the config's fixed values).
struct ServingSetup {
  std::string calibration_method = "none";  ///< temperature | none
  double temperature = 1.0;
  DecisionOptions decision;  ///< as configured (-1: chosen on val)
  DecisionThresholds thresholds;  ///< in force
};

/// How a run recognises out-of-scope samples: from the config, and for the threshold method
/// the threshold (given, or chosen on the validation split and kept in oos.json).
struct OosSetup {
  bool enabled = false;
  bool threshold_method = false;
  std::string label;
  int64_t index = -1;     ///< class index of out-of-scope samples among the gold labels
  double threshold = -1;  ///< threshold method only

  /// The out-of-scope class among the model's outputs (method class), else -1.
  int64_t trained_class() const { return enabled && !threshold_method ? index : -1; }
};

/// From the config and the run's labels. Throws ConfigError when method class names a label
/// that is not among the training labels.
OosSetup oos_setup(const Config& config, const LabelMap& labels);

/// Reads calibration.json and decision.json of a finished run. Throws mmintent::Error naming
/// the file when one is broken, or when decision.json is missing while the config chooses a
/// threshold on val (-1).
ServingSetup load_serving(const RunDirectory& run, const Config& config);
/// oos_setup with, for the threshold method, the threshold of oos.json (Error naming the file
/// when it is missing or has none).
OosSetup load_oos(const RunDirectory& run, const Config& config, const LabelMap& labels);

/// calibration.json (evaluation/calibration.h's CalibrationFile); a run without one gives
/// method "none" and T = 1.
CalibrationFile load_calibration(const RunDirectory& run);
void save_calibration(const RunDirectory& run, const CalibrationFile& calibration);
/// Removes calibration.json (the run serves T = 1).
void remove_calibration(const RunDirectory& run);
/// decision.json: the thresholds in force and whether they were chosen on val.
void save_decision(const RunDirectory& run, const ServingSetup& serving,
                   const ChosenThresholds& chosen);
/// oos.json, for a run with out-of-scope handling (nothing otherwise).
void save_oos(const RunDirectory& run, const OosSetup& oos);

}  // namespace mmintent
