#pragma once
/// Evaluation reports of one split: report.json (all splits of a run), a misclassified-sample
/// listing, PNG plots, and a readable metrics table for the console.

#include "mmintent/evaluation/metrics.h"
#include "mmintent/evaluation/predictions.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mmintent {

/// What a sample looked like, for the misclassified listing: its text and image path as they
/// appear in the manifest (either may be empty when the sample lacks that modality).
struct SampleInfo {
  std::string text;
  std::string image;
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

/// A readable table: a header with the split, count, accuracy, top-k accuracies and
/// macro/weighted F1, then one row per class (label, precision, recall, f1, support) with
/// aligned columns, then macro and weighted average rows. Ends with a newline.
std::string format_metrics_table(const std::string& split, const ClassificationMetrics& m,
                                 const std::vector<std::string>& label_names);

}  // namespace mmintent
