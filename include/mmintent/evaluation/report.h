#pragma once
/// Evaluation reports of one split: report.json (all splits of a run), a misclassified-sample
/// listing, PNG plots, and a readable metrics table for the console.

#include "mmintent/evaluation/calibration.h"
#include "mmintent/evaluation/out_of_scope.h"
#include "mmintent/metrics/classification.h"
#include "mmintent/training/predictions.h"
#include "mmintent/policy/decision.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mmintent {

/// What a sample looked like, for the misclassified listing: its text and image and audio paths
/// as they appear in the manifest (any may be empty when the sample lacks that modality).
struct SampleInfo {
  std::string text;
  std::string image;
  std::string audio;
};

struct SplitReportOptions {
  /// k values of the top-k accuracies (k above the class count counts as the class count).
  std::vector<int64_t> top_ks{1, 3};
  /// How many of the most probable classes each misclassified line lists.
  int64_t listed_top = 3;
  /// Draw confusion_<split>.png and confidence_<split>.png.
  bool plots = true;
};

/// Computes the metrics of one split and writes, into `run_dir` (created when missing):
/// - report.json, merged: the other splits already there are kept and report[split] becomes
///   {count, loss, accuracy, top_k {"1": .., "3": ..}, macro_precision, macro_recall, macro_f1,
///   weighted_f1, per_class {label: {precision, recall, f1, support}},
///   confusion {labels: [...], matrix: [[gold][predicted] counts]}}. Written to a temporary
///   file, then renamed, so a crash never leaves a half-written report.
/// - misclassified_<split>.jsonl: one line per wrong prediction, sorted by sample index:
///   {index, text, image, gold, top: [{label, prob}, ...]} with `listed_top` classes by
///   decreasing probability (top[0] is the prediction). text and image are null when
///   `samples` is empty.
/// - confusion_<split>.png and confidence_<split>.png when options.plots and the split has
///   samples (an empty split writes count 0, an empty listing and removes stale plots).
/// `predictions.probs` is [N,K] with K = label_names.size(); `samples` is indexed by
/// `predictions.indices` (undefined indices mean 0..N-1). Throws mmintent::Error naming the
/// path when something cannot be written, and on inconsistent shapes or labels.
/// Returns the metrics.
ClassificationMetrics write_split_report(const std::string& run_dir, const std::string& split,
                                         const Predictions& predictions,
                                         const std::vector<std::string>& label_names,
                                         const std::vector<SampleInfo>& samples,
                                         const SplitReportOptions& options = {});

/// Calibration of one split: metrics of the raw and of the calibrated probabilities.
struct CalibrationReport {
  std::string method = "none";  ///< temperature | split | none (T = 1)
  double temperature = 1.0;     ///< method temperature
  SplitCalibration split;       ///< method split
  CalibrationMetrics before, after;
  /// With out-of-scope as a trained class: the same over the in-scope samples only (their
  /// share can differ between val, where the calibration is fitted, and test), and the split's
  /// out-of-scope share.
  bool has_in_scope = false;
  CalibrationMetrics in_scope_before, in_scope_after;
  double oos_share = 0;
};

/// Merges report[split]["calibration"] = {method, temperature, count, before: {ece, nll,
/// accuracy, bins: [{lower, upper, count, accuracy, confidence}]}, after: {...}, with method
/// split split: {in_scope_temperature, slope, intercept, fitted_share, share}, and with
/// has_in_scope oos_share and in_scope: {count, before: {ece, nll, accuracy}, after: {...}}} into
/// `run_dir`/report.json (after write_split_report, which replaces report[split]) and, when
/// `plots` and the split has samples, draws reliability_<split>.png: before and after side by
/// side. Throws mmintent::Error naming the path when something cannot be written.
void write_calibration_report(const std::string& run_dir, const std::string& split,
                              const CalibrationReport& report, bool plots = true);

/// The decision policy on one split.
struct DecisionReport {
  DecisionThresholds thresholds;
  DecisionOptions options;  ///< as configured (-1: chosen on val)
  DecisionStats stats;
  std::vector<CoveragePoint> curve;  ///< coverage_curve of the split
};

/// Merges report[split]["decision"] = {min_confidence, clarify_margin, chosen_on_val:
/// {min_confidence, clarify_margin}, target_precision, count, accept, clarify, fallback
/// (shares), accepted, clarified, fallbacks (counts), accepted_accuracy,
/// clarify_top2_accuracy} and, when `plots` and the split has samples, draws
/// coverage_<split>.png with the operating point of min_confidence marked.
void write_decision_report(const std::string& run_dir, const std::string& split,
                           const DecisionReport& report, bool plots = true);

/// Out-of-scope handling on one split.
struct OosReport {
  std::string label;
  std::string method;     ///< class | threshold | both
  std::string score;      ///< the thresholded score (methods threshold and both), else empty
  double threshold = -1;  ///< with a score only
  OosMetrics metrics;
  /// Per out-of-scope score (max_prob, energy, mahalanobis), how well it separates the split's
  /// in-scope and out-of-scope samples (none when the split lacks either).
  std::vector<std::pair<std::string, OosDetection>> scores;
};

/// Merges report[split]["oos"] = {label, method, score and threshold (with a score), in_scope_count,
/// oos_count, in_scope_accuracy, oos_recall, oos_precision, oos_f1, scores: {NAME: {auroc,
/// fpr_at_95_tpr}}}.
void write_oos_report(const std::string& run_dir, const std::string& split, const OosReport& report);

/// One member of an ensemble on a split, its probabilities calibrated by its own temperature
/// and out-of-scope samples recognised its own way (its class, or its own threshold).
struct MemberReport {
  std::string run;
  std::string weights_sha256;
  double temperature = 1;
  double accuracy = 0;
  double macro_f1 = 0;
  bool has_oos = false;
  OosMetrics oos;
};

/// Merges report[split]["members"] = [{run, weights_sha256, temperature, accuracy, macro_f1,
/// and with out-of-scope handling in_scope_accuracy, oos_recall}, ...] in the members' order.
void write_members_report(const std::string& run_dir, const std::string& split,
                          const std::vector<MemberReport>& members);

/// The split evaluated on a noisy copy of its texts (`eval --perturb`, data/text_noise.h).
struct RobustnessReport {
  std::string noise;  ///< "typos:0.1"
  double accuracy = 0, macro_f1 = 0;
  double clean_accuracy = 0;  ///< the same split without noise
  bool has_oos = false;
  OosMetrics oos, clean_oos;
};

/// Merges report[split]["robustness"][noise] = {accuracy, macro_f1, accuracy_drop (clean minus
/// noisy), and with out-of-scope handling in_scope_accuracy, in_scope_accuracy_drop,
/// oos_recall} for each entry.
void write_robustness_report(const std::string& run_dir, const std::string& split,
                             const std::vector<RobustnessReport>& reports);

/// Whether rewriting keeps the meaning: the intent predicted for the normalised text against
/// the one predicted for the original text.
struct RewriteCheck {
  int64_t count = 0;
  int64_t unchanged = 0;
  int64_t normalised_differs = 0;  ///< texts the normaliser changed at all
  struct Change {
    std::string original, normalised, before, after;  ///< texts and predicted intents
  };
  std::vector<Change> changes;  ///< every sample whose intent changed
};

/// Merges report[split]["rewrite"] = {count, normalised_differs (texts the normaliser
/// changed), unchanged, intent_unchanged_rate, changed: [{original, normalised, before,
/// after}, ...] (at most 50)}.
void write_rewrite_report(const std::string& run_dir, const std::string& split,
                          const RewriteCheck& check);

/// A readable table: a header with the split, count, accuracy, top-k accuracies and
/// macro/weighted F1, then one row per class (label, precision, recall, f1, support) with
/// aligned columns, then macro and weighted average rows. Ends with a newline.
std::string format_metrics_table(const std::string& split, const ClassificationMetrics& m,
                                 const std::vector<std::string>& label_names);

}  // namespace mmintent
