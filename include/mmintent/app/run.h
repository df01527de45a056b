#pragma once
/// Whole runs from a config: prepare the data, train, evaluate; and evaluation and calibration
/// of a finished run directory. This is what the `mmintent` CLI calls, and what an app calls to
/// train in code. The run directory's layout is run/run_directory.h's.

#include "mmintent/config/config.h"
#include "mmintent/distributed/communicator.h"
#include "mmintent/evaluation/calibration.h"
#include "mmintent/metrics/classification.h"
#include "mmintent/training/trainer.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mmintent {

struct TrainRunOptions {
  /// Checkpoint to resume from: a path, "auto" (the run dir's last.pt) or empty (fresh run).
  std::string resume;
  /// Print the evaluation tables to stdout.
  bool print_tables = true;
  /// A data-parallel run (distributed/process_group.h: init_process_group): every rank calls
  /// train_from_config with the same config; rank 0 writes the run directory and evaluates,
  /// the others train their shards and return after training (empty metrics). The config's
  /// runtime.device must be this rank's device (rank_device).
  std::shared_ptr<Communicator> communicator;
};

struct TrainRunResult {
  std::string run_dir;
  FitResult fit;
  std::map<std::string, ClassificationMetrics> metrics;  ///< per evaluated split
};

/// Trains and evaluates as `config` says, writing the run directory (config.yaml, labels.json,
/// tokenizer.model, checkpoints, metrics.jsonl, report.json, plots, train.log). Nothing is
/// written before the config and the data have been checked.
TrainRunResult train_from_config(const Config& config, const TrainRunOptions& options = {});

/// Evaluates a finished run on "val", "test" or a manifest file; writes the split's report
/// files into the run directory and returns the metrics. Probabilities are calibrated with
/// the run's calibration.json (T = 1 without one); decisions use decision.json (or the
/// config's fixed thresholds).
///
/// `perturb`: noises (data/text_noise.h: "typos:0.1", "deletion:0.2", "swap:0.1") under which
/// the split is evaluated again, each on a copy of its texts with that noise, sample i's drawn
/// from (runtime.seed, i): report[split].robustness (evaluation/report.h). Throws ConfigError
/// naming --perturb for a bad one, before any work.
ClassificationMetrics evaluate_run(const std::string& run_dir, const std::string& split_or_file,
                                   bool print_table = true, const std::vector<std::string>& perturb = {});

struct CalibrateRunResult {
  std::string method = "none";  ///< temperature | split | none
  TemperatureFit fit;           ///< method temperature (split: its in-scope temperature's)
  SplitCalibration split;       ///< method split
  CalibrationMetrics before, after;  ///< on the fitting split
  double min_confidence = 0, clarify_margin = 0;  ///< the decision thresholds now in force
  std::string oos_score;      ///< the thresholded out-of-scope score (oos.method threshold or both), else empty
  double oos_threshold = -1;  ///< its threshold (with oos_score)
};

/// calibrate_run's out-of-scope share for calibration.method split (below).
struct OosShareOptions {
  double share = -1;          ///< in (0, 1); -1: not given
  std::string estimate_from;  ///< a manifest of unlabelled traffic; empty: not given
};

/// Fits the calibration (calibration.method) of a finished run post hoc on "val" (default), "test" or a manifest
/// file and writes calibration.json (with `fit_temperature` false: removes it, T = 1); then, on
/// the calibrated probabilities, re-chooses what the config chooses on val (-1): the
/// out-of-scope threshold (oos.json) and the decision thresholds (decision.json). Run
/// evaluate_run afterwards to refresh the reports. A run whose weights changed (e.g. tuned)
/// calls this before serving.
/// With calibration.method split, `share` sets the out-of-scope share the probabilities are
/// for: `share` in (0, 1), or estimated (estimate_oos_share) on the samples of the manifest
/// `estimate_from`, whose labels are not read (e.g. a day of unlabelled traffic); neither: the
/// config's calibration.oos_share. calibration.json records it and where it came from.
/// ConfigError when either is given and the config's method is not split.
CalibrateRunResult calibrate_run(const std::string& run_dir,
                                 const std::string& split_or_file = "val",
                                 bool fit_temperature = true, const OosShareOptions& share = {});

}  // namespace mmintent
