#pragma once
/// `mmintent tune`: updates a trained run from a person's feedback (data/feedback.h) and writes
/// the result as a new run directory; the old run is only read.
///
/// Corrections train as labels, acceptances as confirmations (label = the predicted intent),
/// rejections as an unlikelihood penalty -log(1 - p_rejected) weighted by tune.rejection_weight;
/// a fresh draw of the run's training data (tune.replay_ratio per feedback sample) is mixed
/// into every pass so the model does not forget. tune.method says what learns: every weight
/// (full), the fusion and the head (head), or low-rank adapters over frozen weights (lora; the
/// new run holds the adapter alone, over the base run's model.pt). The Trainer and the data
/// pipeline are the ones `train` uses. `merge_adapter_run` folds an adapter run into plain weights.

#include "mmintent/evaluation/off_policy.h"
#include "mmintent/metrics/classification.h"
#include "mmintent/training/trainer.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mmintent {

struct TuneOptions {
  std::string feedback;  ///< the feedback log (JSONL)
  std::string out_dir;   ///< the new run directory (must differ from the old one)
  /// Dotted KEY=VALUE overrides of the old run's config.yaml, e.g. "tune.epochs=5".
  std::vector<std::string> overrides;
  bool overwrite = false;     ///< allow a non-empty out_dir
  bool print_tables = true;   ///< print the evaluation tables to stdout
};

/// The off-policy estimates on the held-out part of the log (tune.holdout > 0): the expected
/// reward of showing each policy's most probable intent, from the logged reactions; the doubly
/// robust one uses each model's calibrated probabilities as its reward model.
struct OffPolicyReport {
  int64_t held_out = 0;       ///< held-out records
  double logged_reward = 0;   ///< their mean reward: what the logging policy earned
  OffPolicyEstimate base_ips, base_snips, base_dr;     ///< the run before the tune
  OffPolicyEstimate tuned_ips, tuned_snips, tuned_dr;  ///< the tuned run
};

struct TuneRunResult {
  std::string run_dir;  ///< the new run directory
  FitResult fit;
  std::map<std::string, ClassificationMetrics> metrics;  ///< per evaluated split (eval.splits)
  int64_t accepted = 0, corrected = 0, rejected = 0;     ///< feedback records per reaction
  int64_t replay_per_epoch = 0;       ///< training samples replayed per pass
  int64_t trainable_parameters = 0;   ///< parameters the tune updated (lora: the adapter's)
  int64_t parameters = 0;             ///< all parameters of the model (not counting an adapter)
  std::optional<OffPolicyReport> off_policy;  ///< with tune.holdout > 0
};

/// Tunes the run in `run_dir` on `options.feedback`, writing `options.out_dir`: config.yaml
/// (the old run's effective config with the overrides, output.dir = the new directory),
/// labels.json and the tokenizer (copied: the class order never changes), best.pt, last.pt,
/// model.pt (tune.method lora: adapter.pt and adapter.json instead of the three), metrics.jsonl, tune.json (base run, feedback log, counts, the off-policy estimates
/// with tune.holdout), report.json and the
/// report files of eval.splits, oos.json where the run has out-of-scope handling, train.log.
/// Nothing is written before the config, the feedback and the data have been checked.
/// Throws ConfigError (bad override, out_dir equal to or inside the run, non-empty out_dir),
/// DataError (feedback or manifest problems, naming file and line; a record without propensity
/// under tune.objective ips / snips or tune.holdout), CheckpointError (model.pt
/// missing or of another architecture) or Error (not a run directory).
TuneRunResult tune_from_feedback(const std::string& run_dir, const TuneOptions& options);

/// `mmintent merge`: writes `out_dir`, a plain run with the adapter of the adapter run
/// `run_dir` folded into its base's weights (model.pt) and the run's config, labels,
/// tokenizer, calibration, out-of-scope and decision files and tune.json; `run_dir` is only
/// read. Throws CheckpointError (not an adapter run, base missing or not the adapter's) or
/// ConfigError (out_dir inside run_dir, or non-empty without `overwrite`).
void merge_adapter_run(const std::string& run_dir, const std::string& out_dir, bool overwrite);

}  // namespace mmintent
