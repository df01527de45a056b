#pragma once
// The steps `train`, `eval`, `calibrate` and `tune` share (src/app only; not installed).

#include "mmintent/app/run.h"
#include "mmintent/data/dataset.h"
#include "mmintent/data/text_noise.h"
#include "mmintent/evaluation/out_of_scope.h"
#include "mmintent/metrics/classification.h"
#include "mmintent/run/serving.h"
#include "mmintent/run/setup.h"
#include "mmintent/training/predictions.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mmintent::detail {

/// Logs the samples of `d` that were skipped (data.on_bad_sample / data.unknown_labels: skip),
/// each by file and line; at most `max_listed` of them, then how many more.
void report_skipped(const MultimodalDataset& d, std::size_t max_listed = SIZE_MAX);

/// Whether the config calibrates the probabilities (calibration.enabled, a method other than none).
inline bool calibrates(const Config& c) { return c.calibration.enabled && c.calibration.method != "none"; }

/// Fits what a run serves on the validation predictions `val` (raw probabilities): the
/// calibration (calibration.json, when `fit_temperature_too`: temperature or split), then on the calibrated
/// probabilities the out-of-scope threshold (when chosen) and the decision thresholds
/// (decision.json). Without val: T = 1 and the configured thresholds.
ServingSetup fit_serving(const Predictions& val, const Config& c, const RunDirectory& run,
                         const std::string& fitted_on, bool fit_temperature_too, OosSetup& oos);

/// The Mahalanobis fit of the out-of-scope report (evaluation/out_of_scope.h): the class means
/// and shared covariance of the in-scope samples of `train` in the features the head's last
/// layer reads. Nothing without out-of-scope handling or training samples.
std::optional<MahalanobisFit> fit_oos_features(IntentClassifier& model, const Config& c,
                                               const std::shared_ptr<const MultimodalDataset>& train,
                                               const c10::Device& device, const OosSetup& oos);

/// What a run serves besides its weights, fitted for `model` and saved in `run`: the
/// Mahalanobis fit on `train`'s in-scope samples (when `train` is given and the run has
/// out-of-scope handling; the report's score, and oos.score mahalanobis's own fit, then kept in
/// oos.mahalanobis), then fit_serving on `val`'s predictions (none: T = 1 and the configured
/// thresholds), then oos.json (save_oos). ConfigError naming oos.score when the score cannot
/// be had: energy for an ensemble, mahalanobis without `train`.
struct FittedServing {
  ServingSetup serving;
  std::optional<MahalanobisFit> features;  ///< the Mahalanobis fit (for evaluate_split)
  Predictions val;                         ///< `val`'s predictions, probabilities raw
};
FittedServing fit_run_serving(IntentClassifier& model, const Config& c, const RunDirectory& run,
                              const std::shared_ptr<const MultimodalDataset>& train,
                              const std::shared_ptr<const MultimodalDataset>& val, const c10::Device& device,
                              const std::string& fitted_on, bool fit_temperature, OosSetup& oos);

/// Predicts `dataset` with `model`, calibrates as `serving` says and writes the split's
/// reports (metrics, out-of-scope, calibration, decisions, rewriting) into the run directory;
/// with `print_table`, prints them too. The out-of-scope report scores each sample with every
/// out-of-scope score (max_prob, energy, and mahalanobis given `features`).
ClassificationMetrics evaluate_split(IntentClassifier& model, const Config& c, const RunData& data,
                                     const std::shared_ptr<const MultimodalDataset>& dataset,
                                     const std::string& name, const RunDirectory& run,
                                     const c10::Device& device, bool print_table,
                                     const OosSetup& oos, const ServingSetup& serving,
                                     const std::optional<MahalanobisFit>& features = std::nullopt);

/// A split as a model serves it: predicted, calibrated by `calibration`, out-of-scope samples
/// recognised as `oos` says (its class, or its threshold).
struct ServedSplit {
  std::vector<int64_t> served, gold;  ///< per sample, in the split's order
  ClassificationMetrics metrics;
  bool has_oos = false;
  OosMetrics oos;
};
ServedSplit serve_split(IntentClassifier& model, const Config& c, const std::shared_ptr<const MultimodalDataset>& dataset,
                        const c10::Device& device, const CalibrationFile& calibration, const OosSetup& oos);

/// An ensemble run's member as the report shows it (evaluation/report.h's MemberReport).
struct MemberSetup {
  std::string run;
  std::string weights_sha256;
  double temperature = 1;
  OosSetup oos;  ///< how the member itself recognises out-of-scope samples
};

/// The members of ensemble run `run` (ensemble.json, each member found and checked), with
/// their own out-of-scope setup read over the ensemble's labels `data`.
std::vector<MemberSetup> member_setups(const RunDirectory& run, const RunData& data);

/// Each member of `ensemble` (IntentClassifierImpl::members, in `members`' order) on the split:
/// report[split].members (write_members_report), after evaluate_split; printed with
/// `print_table`.
void evaluate_members(IntentClassifier& ensemble, const Config& c,
                      const std::shared_ptr<const MultimodalDataset>& dataset, const std::string& name,
                      const RunDirectory& run, const c10::Device& device, bool print_table,
                      const std::vector<MemberSetup>& members);

/// The split under each of `noises` (a noisy copy of its texts, sample i's noise from
/// (runtime.seed, noise kind, i)), predicted and served as `serving` and `oos` say, against
/// the `clean` metrics: report[split].robustness (write_robustness_report); printed with
/// `print_table`.
void evaluate_robustness(IntentClassifier& model, const Config& c, const RunData& data,
                         const std::shared_ptr<const MultimodalDataset>& dataset, const std::string& name,
                         const RunDirectory& run, const c10::Device& device, bool print_table, const OosSetup& oos,
                         const ServingSetup& serving, const ClassificationMetrics& clean,
                         const std::vector<TextNoise>& noises);

/// The samples of the manifest at `path`, read as the config says, over the run's labels and
/// tokenizer; without `label` records of that label (empty: none left out).
std::shared_ptr<MultimodalDataset> read_split(const Config& c, const RunData& data, const std::string& path,
                                              const std::string& drop_label = {});

/// `train` with ensemble.members >= 2 (app/ensemble.h): each member trained into
/// output.dir/members/<i> (its seed and overrides; --resume auto skips the finished ones and
/// resumes the interrupted one), then make_ensemble into output.dir. Every member's config is
/// built and checked first; ConfigError for several processes or output.numbered.
TrainRunResult train_ensemble(const Config& c, const TrainRunOptions& options);

/// A new run directory for `--out`: not a file, empty unless `overwrite`; made. ConfigError
/// naming --out otherwise.
void check_out_dir(const std::filesystem::path& dir, bool overwrite);
/// `p` absolute and normalised (symbolic links resolved where the path exists).
std::filesystem::path normalised(const std::string& p);
/// True when `inner` is `outer` or lies inside it (both absolute and normalised).
bool is_within(const std::filesystem::path& inner, const std::filesystem::path& outer);

/// learning_curve.png from the steps log (training loss, learning rate) and the metrics log
/// (validation loss per epoch); none when no step was logged (train.log_every_steps: 0).
void write_learning_curve(const RunDirectory& run);

/// report.html: report.json's tables per split and the run's plots (learning curve,
/// confusion, confidence, reliability, coverage) in one self-contained page (images inline,
/// no script, nothing fetched). Written atomically; rewritten whenever report.json changes.
void write_html_report(const RunDirectory& run);

}  // namespace mmintent::detail
