#pragma once
/// PNG plots of evaluation results, drawn with OpenCV (no OpenCV types in this header).

#include "mmintent/evaluation/calibration.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mmintent {

/// Confusion matrix heat map: `confusion` is [gold][predicted] counts (K x K, K =
/// label_names.size()). Cells are coloured by the row-normalised share (recall per gold class;
/// non-zero cells get at least a 10% tint so rare confusions stay visible) and show their count
/// while cells are large enough; class names label both axes (gold down the left, predicted
/// along the bottom); past 75 classes the names give way to index ticks. Non-ASCII characters
/// in names are drawn as '?'. Throws mmintent::Error naming `png_path` when the shapes
/// disagree or the file cannot be written.
void draw_confusion_matrix(const std::vector<std::vector<int64_t>>& confusion,
                           const std::vector<std::string>& label_names, const std::string& title,
                           const std::string& png_path);

/// Overlaid histograms (20 bins over [0,1]) of the top-class probability of correct and wrong
/// predictions, with axes, tick labels, per-bin counts and a legend giving each total: the plot
/// used to pick a confidence threshold. Values outside [0,1] are clamped. Throws
/// mmintent::Error naming `png_path` when it cannot be written.
void draw_confidence_histogram(const std::vector<double>& correct_top_probs,
                               const std::vector<double>& wrong_top_probs,
                               const std::string& title, const std::string& png_path);

/// Reliability diagrams side by side, one panel per (panel title, metrics) pair (e.g. before
/// and after calibration): per confidence bin a bar up to the bin's accuracy, the gap to its
/// mean confidence shaded red, the diagonal of perfect calibration, the ECE in the panel's
/// title, and under each panel a strip with the share of samples per bin. Throws
/// mmintent::Error naming `png_path` when there is no panel or it cannot be written.
void draw_reliability_diagram(const std::vector<std::pair<std::string, CalibrationMetrics>>& panels,
                              const std::string& title, const std::string& png_path);

/// A coverage/accuracy curve: what share of requests is accepted against how accurate the
/// accepted ones are, as the confidence threshold sweeps.
struct CoverageCurvePlot {
  std::vector<double> coverage;  ///< x, in [0,1]
  std::vector<double> accuracy;  ///< y, in [0,1]; same length as coverage
  double target_precision = -1;  ///< a dashed horizontal line when >= 0
  /// A marked operating point (e.g. the chosen min_confidence) when both are >= 0.
  double operating_coverage = -1, operating_accuracy = -1;
  std::string operating_label;
  /// A second marked point (e.g. the whole decision policy: share accepted and its accuracy,
  /// clarify included) when both are >= 0.
  double policy_coverage = -1, policy_accuracy = -1;
  std::string policy_label;
};

/// Draws the curve (axes, grid, tick labels, the target line and the operating point with its
/// label). Throws mmintent::Error naming `png_path` on different lengths or when it cannot be
/// written; an empty curve draws "no accepted predictions".
void draw_coverage_curve(const CoverageCurvePlot& curve, const std::string& title,
                         const std::string& png_path);

/// The learning curve of a run: training loss against optimizer steps (the steps log's
/// points), the validation loss at each epoch's last step where there is one, and below, the
/// learning rate against the same steps.
struct LearningCurvePlot {
  std::vector<double> steps, train_loss, lr;  ///< one value per point, same lengths
  std::vector<double> epoch_steps, val_loss;  ///< one per epoch with a validation loss
};

/// Two panels (loss above, learning rate below) with axes, grid, tick labels and a legend.
/// Throws mmintent::Error naming `png_path` on different lengths or when it cannot be written;
/// no points draws "no steps logged".
void draw_learning_curve(const LearningCurvePlot& curve, const std::string& title,
                         const std::string& png_path);

}  // namespace mmintent
