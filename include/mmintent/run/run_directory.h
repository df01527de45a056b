#pragma once
/// A run directory: what `train` and `tune` write and what `eval`, `calibrate`, `predict` and
/// apps read. This is the one place that knows its layout (the file names below); everything
/// else asks a RunDirectory for a part's path, or has it load or save the part.
///
///   config.yaml          the effective config (every key, absolute paths)
///   labels.json          the class order of the model's outputs
///   tokenizer.model      the sentencepiece model (text runs), tokenizer.vocab beside it
///   best.pt, last.pt     checkpoints (best epoch; last epoch, to resume)
///   model.pt             the final weights (what is served)
///   adapter.pt           instead of model.pt in a run tuned with tune.method lora: a
///                        low-rank adapter (models/low_rank.h) over its base run's model.pt
///   adapter.json         the adapter's settings, its base run and that model.pt's SHA-256
///   ensemble.json        instead of model.pt in an ensemble run (`mmintent ensemble`): the
///                        member runs whose calibrated probabilities it averages, each with its
///                        weights' SHA-256 and temperature
///   metrics.jsonl        one line per epoch
///   calibration.json     the temperature (absent: T = 1)
///   oos.json             out-of-scope handling (runs with oos.label)
///   oos_mahalanobis.pt   the class means and precision of oos.score: mahalanobis
///   decision.json        the accept / clarify / fallback thresholds in force
///   tune.json            what a tuned run was tuned from
///   report.json, report_<split>.*, ...   evaluation reports (evaluation/report.h)
///   skipped_<split>.txt  samples left out under data.on_bad_sample: skip
///   train.log            the log of the command that wrote the run

#include "mmintent/models/low_rank.h"
#include "mmintent/training/trainer.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace mmintent {

struct Config;
class LabelMap;
class Tokenizer;

/// adapter.json: what an adapter run's adapter.pt adapts.
struct AdapterManifest {
  std::string base_run;             ///< the base run directory, absolute
  std::string base_run_relative;    ///< the same, relative to the adapter run (both moved together)
  std::string base_weights_sha256;  ///< the base's model.pt when the adapter was trained
  LowRankOptions options;
  std::vector<std::string> targets;  ///< the adapted weights (LowRankAdapterImpl::targets)
  int64_t parameters = 0;            ///< the adapter's
};

/// One member of an ensemble run (ensemble.json).
struct EnsembleMember {
  std::string run;             ///< the member run directory, absolute
  std::string run_relative;    ///< the same, relative to the ensemble run (moved together)
  std::string weights_sha256;  ///< the member's weights_digest() when the ensemble was made
  double temperature = 1;      ///< the member's calibration then (its probabilities' T)
};

/// ensemble.json: the finished runs an ensemble run averages, in order.
struct EnsembleManifest {
  std::vector<EnsembleMember> members;
};

class RunDirectory {
 public:
  /// `path` as the user gave it: messages name it that way. Nothing is read or checked.
  explicit RunDirectory(std::filesystem::path path);

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

  // ---- Where each part lives.
  std::filesystem::path config_file() const;
  std::filesystem::path labels_file() const;
  std::filesystem::path tokenizer_file() const;
  std::filesystem::path tokenizer_vocab_file() const;
  std::filesystem::path weights_file() const;  ///< model.pt: the final weights
  std::filesystem::path adapter_file() const;      ///< adapter.pt: an adapter run's weights
  std::filesystem::path adapter_manifest() const;  ///< adapter.json
  std::filesystem::path ensemble_manifest() const;  ///< ensemble.json
  std::filesystem::path int8_weights_file() const;  ///< model.int8.pt: a quantised run's weights
  std::filesystem::path quantize_manifest() const;  ///< quantize.json
  std::filesystem::path best_checkpoint() const;
  std::filesystem::path last_checkpoint() const;
  std::filesystem::path metrics_log() const;
  std::filesystem::path steps_log() const;            ///< the learning curve's points
  std::filesystem::path learning_curve_plot() const;  ///< learning_curve.png
  std::filesystem::path html_report() const;          ///< report.html
  std::filesystem::path calibration_file() const;
  std::filesystem::path oos_file() const;
  std::filesystem::path oos_mahalanobis_file() const;  ///< oos_mahalanobis.pt
  std::filesystem::path decision_file() const;
  std::filesystem::path tune_file() const;
  std::filesystem::path report_file() const;
  std::filesystem::path log_file() const;
  std::filesystem::path skipped_file(const std::string& split) const;
  /// The trainer's files (checkpoints and metrics log) in this directory.
  TrainerFiles trainer_files() const;

  // ---- Checks.
  /// Throws CheckpointError (exit 5) when the directory does not exist, is a file, or has no
  /// config.yaml: one message per case, the same from every command.
  void require_config() const;
  /// require_config(), then CheckpointError naming labels.json or served_weights_file() when
  /// one is missing.
  void require_finished() const;
  /// Whether the run's weights are a low-rank adapter over another run's (adapter.json exists).
  bool has_adapter() const;
  /// Whether the run is an ensemble of other runs (ensemble.json exists).
  bool has_ensemble() const;
  /// Whether the run's weights are int8 (model.int8.pt exists).
  bool has_int8() const;
  /// The file that pins the weights the run serves: model.pt; adapter.pt for an adapter run
  /// (its base pinned by adapter.json); ensemble.json for an ensemble run (its members pinned
  /// by their digests in it); model.int8.pt for a quantised run.
  std::filesystem::path served_weights_file() const;
  /// The SHA-256 of served_weights_file(): the served model's version. Throws DataError when
  /// the file cannot be read.
  std::string weights_digest() const;

  // ---- Reading the parts (each throws an error naming the file when it is broken). These and
  // save_config/labels/tokenizer need the data layer: they are in libmmintent; the layout
  // above is in mmintent_core too (a LibTorch-only build writes the trainer's files).
  Config load_config(const std::vector<std::string>& overrides = {}) const;
  LabelMap load_labels() const;
  /// The run's tokenizer, or null when `config` uses no text.
  std::shared_ptr<const Tokenizer> load_tokenizer(const Config& config) const;
  /// adapter.json; CheckpointError naming the file and the key that is missing or wrong.
  AdapterManifest load_adapter_manifest() const;
  /// ensemble.json; CheckpointError naming the file and the key that is missing or wrong.
  EnsembleManifest load_ensemble_manifest() const;

  // ---- Writing the parts (atomically where a reader could see a half-written file).
  void save_config(const Config& config) const;
  void save_labels(const LabelMap& labels) const;
  /// Copies a tokenizer model (and its .vocab when there is one) into the run.
  void save_tokenizer(const std::filesystem::path& model) const;
  /// Writes adapter.pt (the adapter's weights), then adapter.json: a reader sees both or none.
  void save_adapter(const LowRankAdapterImpl& adapter, const AdapterManifest& manifest) const;
  /// Writes ensemble.json atomically.
  void save_ensemble_manifest(const EnsembleManifest& manifest) const;
  /// Removes every file that decides what the run serves (model.pt, adapter.pt, adapter.json,
  /// ensemble.json, model.int8.pt, quantize.json): what a command that writes new weights into
  /// an existing directory does first, so that no other kind of weights is left to be read.
  void remove_served_weights() const;
  /// Writes skipped_<split>.txt ("file:line: reason", one a line); removes a stale one when
  /// `skipped` is empty.
  void save_skipped(const std::string& split, const std::vector<std::string>& skipped) const;
  /// Writes `text` to `file` of this run through a temporary file renamed over it.
  void write_atomically(const std::filesystem::path& file, const std::string& text) const;

 private:
  std::filesystem::path path_;
};

}  // namespace mmintent
