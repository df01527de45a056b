#pragma once
/// Trainer callbacks: what happens around the training loop without being the loop. The
/// Trainer installs its own (early stopping, the metrics log, checkpoints, the epoch's log
/// line) from TrainerOptions, in that order; an app adds more with Trainer::add_callback.
///
/// Order matters and is fixed: early stopping decides `improved` and whether to stop before the
/// metrics line is written, and the metrics line is written before last.pt, so that a process
/// killed between the two leaves one line too many (which resume drops), never a checkpoint
/// whose epoch has no line.

#include "mmintent/training/early_stopping.h"

#include <map>
#include <string>
#include <vector>

namespace mmintent {

class Trainer;
struct TrainerFiles;

/// Metrics of one epoch: "train.loss", "train.accuracy", "val.loss", "val.accuracy",
/// "val.macro_f1", "val.weighted_f1", "val.top3_accuracy" (metrics/meters.h), "lr".
struct EpochRecord {
  int64_t epoch = 0;  ///< 1-based
  std::map<std::string, double> metrics;
  bool improved = false;  ///< set by early stopping: a new best of its metric
  double seconds = 0;     ///< training and validation
};

struct FitResult {
  int64_t epochs_completed = 0;
  int64_t best_epoch = 0;  ///< 1-based; 0 when nothing was tracked
  double best_value = 0;
  std::string stop_reason;  ///< "max_epochs" or "early_stopping"
  std::vector<EpochRecord> history;
};

/// The learning curve's point: the mean training loss per sample over the optimizer steps
/// since the previous record (all ranks' samples in a data-parallel run), and the learning
/// rate of the last of them.
struct StepRecord {
  int64_t step = 0;   ///< optimizer steps done, over the whole run (1-based)
  int64_t epoch = 0;  ///< 1-based
  double loss = 0;
  double lr = 0;
  int64_t samples = 0;  ///< samples the loss is the mean over
};

class Callback {
 public:
  virtual ~Callback() = default;
  /// The trainer resumed from a checkpoint (Trainer::state() holds the epoch reached).
  virtual void on_resume(Trainer& /*trainer*/) {}
  /// fit() starts (after any resume).
  virtual void on_fit_start(Trainer& /*trainer*/) {}
  /// An epoch's training and validation are done; `record` holds its metrics.
  virtual void on_epoch_end(Trainer& /*trainer*/, EpochRecord& /*record*/) {}
  /// Every TrainerOptions::log_every_steps optimizer steps and at each epoch's last step.
  virtual void on_step(Trainer& /*trainer*/, const StepRecord& /*record*/) {}
  /// fit() is about to return.
  virtual void on_fit_end(Trainer& /*trainer*/, FitResult& /*result*/) {}
};

/// Early stopping on one reported metric (early_stopping.h): sets `improved`, keeps the best
/// weights, asks the trainer to stop, and at the end restores the best weights. In a
/// data-parallel run rank 0 decides and every rank applies its decision.
class EarlyStoppingCallback : public Callback {
 public:
  explicit EarlyStoppingCallback(EarlyStoppingOptions options);
  void on_resume(Trainer& trainer) override;
  void on_epoch_end(Trainer& trainer, EpochRecord& record) override;
  void on_fit_end(Trainer& trainer, FitResult& result) override;

 private:
  EarlyStopping early_stopping_;
};

/// Appends one JSON line per epoch to a file; on resume, drops the lines of the epochs after
/// the checkpoint (they are about to be recomputed).
class MetricsLogCallback : public Callback {
 public:
  explicit MetricsLogCallback(std::string path) : path_(std::move(path)) {}
  void on_resume(Trainer& trainer) override;
  void on_epoch_end(Trainer& trainer, EpochRecord& record) override;

 private:
  std::string path_;
};

/// Appends one JSON line per StepRecord to a file ({"step", "epoch", "loss", "lr", "samples"});
/// on resume, drops the lines after the checkpoint's step (they are about to be recomputed,
/// identically).
class StepsLogCallback : public Callback {
 public:
  explicit StepsLogCallback(std::string path) : path_(std::move(path)) {}
  void on_resume(Trainer& trainer) override;
  void on_step(Trainer& trainer, const StepRecord& record) override;

 private:
  std::string path_;
};

/// best checkpoint when an epoch improves, last checkpoint after every epoch, final weights
/// when fit ends (each only when its path is set).
class CheckpointCallback : public Callback {
 public:
  CheckpointCallback(std::string best, std::string last, std::string final_weights)
      : best_(std::move(best)), last_(std::move(last)), final_(std::move(final_weights)) {}
  void on_epoch_end(Trainer& trainer, EpochRecord& record) override;
  void on_fit_end(Trainer& trainer, FitResult& result) override;

 private:
  std::string best_, last_, final_;
};

/// The epoch's log line: "epoch N: key=value ... (best)".
class EpochLogCallback : public Callback {
 public:
  void on_epoch_end(Trainer& trainer, EpochRecord& record) override;
};

}  // namespace mmintent
