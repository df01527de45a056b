#pragma once
/// Ensembles of finished runs: `mmintent ensemble RUN RUN... --out DIR`. The ensemble is a run
/// directory like any other (eval, predict, calibrate, serve load it unchanged): its
/// ensemble.json names the member runs (each pinned by its weights' SHA-256 and its
/// temperature), its model is the mean of the members' calibrated probabilities
/// (IntentClassifierImpl's ensemble), and what it serves (calibration, out-of-scope threshold,
/// decision thresholds) is fitted on val like a trained run's.

#include "mmintent/metrics/classification.h"

#include <map>
#include <string>
#include <vector>

namespace mmintent {

struct EnsembleOptions {
  /// Finished run directories (two or more; an ensemble or an adapter run may be one): same
  /// intents, same tokenizer, same inputs (modalities, image, audio and text settings) and the
  /// same out-of-scope label and method. Their architectures may differ.
  std::vector<std::string> members;
  std::string out_dir;  ///< the new run directory
  /// Dotted KEY=VALUE overrides of the first member's config, which becomes the ensemble's
  /// (eval, oos, decision, calibration, runtime, rewrite settings; not its inputs).
  std::vector<std::string> overrides;
  bool overwrite = false;     ///< allow a non-empty out_dir
  bool print_tables = true;   ///< print the evaluation tables to stdout
};

struct EnsembleResult {
  std::string run_dir;
  std::map<std::string, ClassificationMetrics> metrics;  ///< the ensemble's, per evaluated split
};

/// Checks the members (ConfigError on --out or the member list, CheckpointError naming the
/// member that is unfinished or does not match the first), writes the ensemble run (config.yaml,
/// labels.json, the tokenizer, ensemble.json), fits calibration, out-of-scope threshold and
/// decision thresholds on val, and evaluates eval.splits: report.json holds the ensemble's
/// figures and, under `members`, each member's. When a step fails, ensemble.json is removed:
/// the directory is then not a finished run.
EnsembleResult make_ensemble(const EnsembleOptions& options);

}  // namespace mmintent
