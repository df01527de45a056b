#pragma once
/// Whole runs from a config: prepare the data, train, evaluate; and evaluation of a finished
/// run directory. This is what the `mmintent` CLI calls, and what an app calls to train in code.

#include "mmintent/config/config.h"
#include "mmintent/data/dataset.h"
#include "mmintent/data/loader.h"
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

/// The loader for a split: shuffled and augmented for training, in order otherwise.
std::unique_ptr<DataLoader> make_loader(const Config& config,
                                        std::shared_ptr<const MultimodalDataset> dataset,
                                        bool training);

/// Builds the model for `config` with its sizes taken from the data.
IntentClassifier build_model(const Config& config, const RunData& data);

struct TrainRunOptions {
  /// Checkpoint to resume from: a path, "auto" (the run dir's last.pt) or empty (fresh run).
  std::string resume;
  /// Print the evaluation tables to stdout.
  bool print_tables = true;
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
/// files into the run directory and returns the metrics.
ClassificationMetrics evaluate_run(const std::string& run_dir, const std::string& split_or_file,
                                   bool print_table = true);

}  // namespace mmintent
