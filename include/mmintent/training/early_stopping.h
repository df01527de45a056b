#pragma once
/// Early stopping on any reported metric: mode min or max, patience counted in evaluations,
/// a minimum improvement, and a minimum number of epochs before stopping is allowed.

#include <cstdint>
#include <string>

namespace mmintent {

struct EarlyStoppingOptions {
  bool enabled = true;
  /// Any key of the per-epoch metrics, e.g. "val.loss", "val.accuracy", "val.macro_f1".
  std::string metric = "val.loss";
  /// "min" or "max".
  std::string mode = "min";
  /// Stop after this many consecutive evaluations without improvement (>= 1).
  int64_t patience = 5;
  /// An improvement must exceed this margin to count.
  double min_delta = 0.0;
  /// No stop before this many epochs have completed.
  int64_t min_epochs = 1;
  /// Load the best weights back into the model when training ends.
  bool restore_best = true;
};

class EarlyStopping {
 public:
  /// Everything needed to resume the decision sequence; saved in checkpoints.
  struct State {
    bool has_best = false;
    double best_value = 0.0;
    int64_t best_epoch = -1;
    int64_t stalls = 0;       ///< evaluations since the last improvement
    int64_t evaluations = 0;
  };

  explicit EarlyStopping(EarlyStoppingOptions options);

  /// Records the metric after epoch `epoch` (0-based); returns true when it is a new best.
  bool update(int64_t epoch, double value);
  /// True when training should stop after epoch `epoch` (0-based).
  bool should_stop(int64_t epoch) const;

  const State& state() const { return state_; }
  void set_state(const State& state) { state_ = state; }
  const EarlyStoppingOptions& options() const { return options_; }

 private:
  EarlyStoppingOptions options_;
  State state_;
};

}  // namespace mmintent
