#pragma once
/// What a config means for the layers below it: the runtime (threads, allocator), how
/// manifests are read and samples prepared, the loaders, and the model. Every command that
/// trains, evaluates or serves a run sets itself up through these, so that a run is read the
/// same way by `train`, `eval`, `tune` and the Predictor.

#include "mmintent/config/config.h"
#include "mmintent/data/dataset.h"
#include "mmintent/data/loader.h"
#include "mmintent/run/run_directory.h"

#include <c10/core/Device.h>

#include <memory>
#include <vector>

namespace mmintent {

/// Everything the data layer produces for a run.
struct RunData {
  LabelMap labels;
  std::shared_ptr<const Tokenizer> tokenizer;  ///< null when text is unused
  std::shared_ptr<const MultimodalDataset> train, val, test;
};

/// The labels and tokenizer of a finished run (no split is read).
RunData load_run_data(const RunDirectory& run, const Config& config);

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

/// A finished run's model: built for the run's `config` and `data`, its final weights
/// (model.pt) loaded, on `device`, in training mode as built (callers set eval()). An adapter
/// run's (tune.method lora): its base run's model.pt, checked against the SHA-256 in
/// adapter.json, with adapter.pt merged in. An ensemble run's: its members' models, each
/// loaded as its run says, averaged (IntentClassifierImpl's ensemble). A quantised run's:
/// model.int8.pt dequantised (training/quantization.h). Throws CheckpointError
/// when the weights are missing, truncated or of another architecture, or the base or a
/// member is not the one recorded.
IntentClassifier load_run_model(const RunDirectory& run, const Config& config, const RunData& data,
                                const c10::Device& device);

/// The member runs of an ensemble run (its `manifest`), in order: each where it was, else
/// where it is relative to the ensemble run, finished and with the weights recorded. Throws
/// CheckpointError naming the member that is missing or changed.
std::vector<RunDirectory> ensemble_member_runs(const RunDirectory& run, const EnsembleManifest& manifest);

}  // namespace mmintent
