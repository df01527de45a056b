#pragma once
/// Whole runs from a config: prepare the data, train, evaluate; and evaluation of a finished
/// run directory. This is what the `mmintent` CLI calls, and what an app calls to train in code.

#include "mmintent/config/config.h"
#include "mmintent/data/dataset.h"
#include "mmintent/data/loader.h"
#include "mmintent/evaluation/calibration.h"
#include "mmintent/evaluation/metrics.h"
#include "mmintent/training/trainer.h"

#include <map>
#include <memory>
#include <string>

namespace mmintent {

/// Everything the data layer produces for a run.
struct RunData {
  LabelMap labels;
  std::shared_ptr<const Tokenizer> tokenizer;  ///< null when text is unused
  std::shared_ptr<const MultimodalDataset> train, val, test;
};

/// How the config says manifests are read (fields, format, missing modalities, bad records).
ManifestReadOptions manifest_read_options(const Config& config, bool require_label);
/// How the config says samples are prepared (modalities, image size, text length, policies).
DatasetOptions dataset_options(const Config& config);

/// Sets the process's runtime from the config, once per command: LibTorch's and the BLAS's
/// threads (runtime.threads), OpenCV's pool off (the loader's threads already run in parallel;
/// OpenCV's on top would oversubscribe the cores), the allocator (runtime.keep_freed_memory).
void configure_runtime(const Config& config);

/// The loader for a split: shuffled and augmented for training, in order otherwise; in a
/// data-parallel run, rank `rank`'s shard of every pass (see DataLoader).
std::unique_ptr<DataLoader> make_loader(const Config& config,
                                        std::shared_ptr<const MultimodalDataset> dataset,
                                        bool training, int64_t rank = 0, int64_t world_size = 1);

/// Builds the model for `config` with its sizes taken from the data.
IntentClassifier build_model(const Config& config, const RunData& data);

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
ClassificationMetrics evaluate_run(const std::string& run_dir, const std::string& split_or_file,
                                   bool print_table = true);

/// What a run serves beyond its weights: the temperature (calibration.json; T = 1 without
/// one) and the decision thresholds (decision.json; without one the config's fixed values).
struct ServingSetup {
  std::string calibration_method = "none";  ///< temperature | none
  double temperature = 1.0;
  DecisionOptions decision;  ///< as configured (-1: chosen on val)
  DecisionThresholds thresholds;  ///< in force
};

/// Reads calibration.json and decision.json of a finished run. Throws mmintent::Error naming
/// the file when one is broken, or when decision.json is missing while the config chooses a
/// threshold on val (-1).
ServingSetup load_serving(const std::string& run_dir, const Config& config);

struct CalibrateRunResult {
  TemperatureFit fit;
  CalibrationMetrics before, after;  ///< on the fitting split
  double min_confidence = 0, clarify_margin = 0;  ///< the decision thresholds now in force
  double oos_threshold = -1;  ///< oos.method: threshold only
};

/// Fits the temperature of a finished run post hoc on "val" (default), "test" or a manifest
/// file and writes calibration.json (with `fit_temperature` false: removes it, T = 1); then, on
/// the calibrated probabilities, re-chooses what the config chooses on val (-1): the
/// out-of-scope threshold (oos.json) and the decision thresholds (decision.json). Run
/// evaluate_run afterwards to refresh the reports. A run whose weights changed (e.g. tuned)
/// calls this before serving.
CalibrateRunResult calibrate_run(const std::string& run_dir,
                                 const std::string& split_or_file = "val",
                                 bool fit_temperature = true);

}  // namespace mmintent
