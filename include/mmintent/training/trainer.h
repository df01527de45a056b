#pragma once
/// The training loop: optimizer and schedule, gradient clipping and accumulation, validation
/// each epoch, early stopping, checkpoints (best and last), resume, progress and metrics lines.
///
/// Data-parallel with a Communicator (distributed/communicator.h): parameters are broadcast
/// from rank 0 when fit() starts; each optimizer step sums the gradients over the ranks
/// (bucketed), each rank's loss being divided by the samples of the global batch, so that
/// W ranks x batch B step exactly as 1 rank x batch W*B would (save for batch-norm, whose
/// batch statistics stay per rank as in PyTorch's DDP). Training and validation metrics are
/// reduced from counts; early stopping is decided on rank 0 and applied on all; only rank 0
/// writes. The sources must be sharded the same way on every rank (DataLoader's rank and
/// world_size).

#include "mmintent/core/batch.h"
#include "mmintent/distributed/communicator.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/early_stopping.h"
#include "mmintent/training/loss.h"
#include "mmintent/training/optimization.h"
#include "mmintent/training/precision.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mmintent {

struct TrainerOptions {
  int64_t epochs = 10;
  double grad_clip = 0.0;          ///< max global gradient norm; 0 disables clipping
  int64_t accumulation_steps = 1;  ///< micro-batches per optimizer step
  std::string device = "auto";     ///< auto | cpu | cuda | cuda:N
  std::string precision = "fp32";  ///< fp32 | bf16 (autocast; see training/precision.h)
  uint64_t seed = 42;
  OptimizerOptions optimizer;
  SchedulerOptions scheduler;
  LossOptions loss;
  EarlyStoppingOptions early_stopping;
  /// Directory for last.pt, best.pt, model.pt and metrics.jsonl; empty writes nothing.
  std::string run_dir;
  bool save_best = true;
  bool save_last = true;
  std::string progress = "auto";  ///< auto | bar | lines | none
  /// Multi-process runs: gradients are summed in buckets of about this many bytes.
  int64_t gradient_bucket_bytes = int64_t{25} << 20;
};

/// Metrics of one epoch: "train.loss", "train.accuracy", "val.loss", "val.accuracy",
/// "val.macro_f1", "val.weighted_f1", "val.top3_accuracy", "lr".
struct EpochRecord {
  int64_t epoch = 0;  ///< 1-based
  std::map<std::string, double> metrics;
  bool improved = false;
  double seconds = 0;
};

struct FitResult {
  int64_t epochs_completed = 0;
  int64_t best_epoch = 0;  ///< 1-based; 0 when nothing was tracked
  double best_value = 0;
  std::string stop_reason;  ///< "max_epochs" or "early_stopping"
  std::vector<EpochRecord> history;
};

class Trainer {
 public:
  /// Moves `model` to the configured device and builds the optimizer. With `comm` (world
  /// size > 1) the run is data-parallel; only its rank 0 writes into options.run_dir.
  Trainer(IntentClassifier model, TrainerOptions options,
          std::shared_ptr<Communicator> comm = nullptr);
  ~Trainer();

  /// Continues a run from a checkpoint written by a trainer of the same configuration (and,
  /// data-parallel, the same number of processes: a CheckpointError says otherwise).
  void resume(const std::string& checkpoint_path);
  /// Trains until options.epochs or early stopping. `val` may be null.
  FitResult fit(BatchSource& train, BatchSource* val);

  /// Validation metrics ("<prefix>.loss", accuracy, macro_f1, ...) of the current model; in
  /// a data-parallel run, over all ranks' shards of `source` (every rank must call it).
  std::map<std::string, double> evaluate(BatchSource& source, const std::string& prefix);

  IntentClassifier& model() { return model_; }
  const c10::Device& device() const { return device_; }
  const TrainingState& state() const { return state_; }

  /// Called after every epoch, after checkpoints are written.
  std::function<void(const EpochRecord&)> on_epoch_end;

 private:
  std::map<std::string, double> train_epoch(BatchSource& train, const LrSchedule& schedule);
  void write_metrics_line(const EpochRecord& record);
  bool distributed() const { return comm_ && comm_->world_size() > 1; }

  IntentClassifier model_;
  TrainerOptions options_;
  c10::Device device_;
  Precision precision_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  EarlyStopping early_stopping_;
  TrainingState state_;
  StateDict best_;  ///< best weights so far, on the CPU
  std::shared_ptr<Communicator> comm_;
  std::unique_ptr<GradientReducer> reducer_;
  bool writes_ = false;  ///< run_dir set, and rank 0 (or a single process)
};

}  // namespace mmintent
