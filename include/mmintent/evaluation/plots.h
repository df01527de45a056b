#pragma once
/// PNG plots of evaluation results, drawn with OpenCV (no OpenCV types in this header).

#include <cstdint>
#include <string>
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

}  // namespace mmintent
