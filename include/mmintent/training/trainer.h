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
///
/// Adversarial training (options.adversarial, training/adversarial.h): each micro-batch's clean
/// backward pass is followed by the adversarial one (weighted, divided by the same window's
/// samples), both before the step's single gradient reduction, clipping and optimizer step.
/// Batch-norm running statistics are left as the clean pass set them. Nothing of it is saved:
/// the perturbation is recomputed per step, and it draws no random numbers of its own (only
/// the extra forward passes' dropout), so a resumed run repeats the uninterrupted one.
///
/// Around the loop, callbacks (training/callbacks.h): early stopping, the metrics log,
/// checkpoints and the epoch's log line are the trainer's own, installed from its options;
/// metrics are meters (metrics/meters.h).

#include "mmintent/core/batch.h"
#include "mmintent/distributed/communicator.h"
#include "mmintent/training/adversarial.h"
#include "mmintent/training/callbacks.h"
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

/// The files a trainer writes; an empty path is not written. A run directory gives its own
/// (run/run_directory.h: RunDirectory::trainer_files).
struct TrainerFiles {
  std::string best_checkpoint;  ///< weights, optimizer and state of the best epoch
  std::string last_checkpoint;  ///< the same after every epoch, with the best weights: to resume
  std::string final_weights;    ///< the weights training ends with (the best ones when restored)
  std::string metrics_log;      ///< one JSON line per epoch
  std::string steps_log;        ///< one JSON line every log_every_steps optimizer steps

  bool any() const {
    return !best_checkpoint.empty() || !last_checkpoint.empty() || !final_weights.empty() ||
           !metrics_log.empty() || !steps_log.empty();
  }
};

/// train.distill: learning from a teacher's probabilities (loss.h's distillation term). The
/// caller attaches the teacher's probabilities to the training batches (Batch::teacher, e.g.
/// distill.h's TeacherSource); the trainer weighs them with `alpha` at `temperature`.
struct DistillOptions {
  std::string teacher;       ///< a finished run directory (an ensemble too); empty: none
  double temperature = 2.0;  ///< T > 0: both distributions softened by it
  double alpha = 0.5;        ///< weight of the distillation term, in [0, 1]
};

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
  DistillOptions distill;
  /// train.adversarial: FGM / PGD adversarial training (training/adversarial.h); method none: off.
  AdversarialOptions adversarial;
  EarlyStoppingOptions early_stopping;
  /// Where checkpoints and the metrics log go; empty paths write nothing.
  TrainerFiles files;
  bool save_best = true;
  bool save_last = true;
  std::string progress = "auto";  ///< auto | bar | lines | none
  /// The learning curve: every this many optimizer steps (and at each epoch's last step), the
  /// mean training loss of the steps since the last record and the learning rate go to the
  /// steps log and to Callback::on_step. 0: none.
  int64_t log_every_steps = 10;
  /// Multi-process runs: gradients are summed in buckets of about this many bytes.
  int64_t gradient_bucket_bytes = int64_t{25} << 20;
};

class Trainer {
 public:
  /// Moves `model` to the configured device and builds the optimizer. With `comm` (world
  /// size > 1) the run is data-parallel; only its rank 0 writes options.files.
  Trainer(IntentClassifier model, TrainerOptions options,
          std::shared_ptr<Communicator> comm = nullptr);
  ~Trainer();

  /// Continues a run from a checkpoint written by a trainer of the same configuration (and,
  /// data-parallel, the same number of processes: a CheckpointError says otherwise).
  void resume(const std::string& checkpoint_path);
  /// Trains until options.epochs or early stopping. `val` may be null.
  FitResult fit(BatchSource& train, BatchSource* val);

  /// Validation metrics ("<prefix>.loss", accuracy, macro_f1, ...: the validation meters) of
  /// the current model; in a data-parallel run, over all ranks' shards of `source` (every rank
  /// must call it).
  std::map<std::string, double> evaluate(BatchSource& source, const std::string& prefix);

  /// Runs after the trainer's own callbacks, in the order added.
  void add_callback(std::shared_ptr<Callback> callback);

  IntentClassifier& model() { return model_; }
  const c10::Device& device() const { return device_; }
  const TrainerOptions& options() const { return options_; }
  const TrainingState& state() const { return state_; }
  TrainingState& mutable_state() { return state_; }
  /// The communicator of a data-parallel run; null in a single process.
  Communicator* communicator() const { return distributed() ? comm_.get() : nullptr; }

  // ---- For callbacks.
  /// Ends fit() after the current epoch's callbacks; `message` is logged.
  void request_stop(std::string reason, std::string message);
  /// Keeps a copy of the current weights as the best ones (on the CPU).
  void remember_best();
  bool has_best() const { return !best_.empty(); }
  /// Loads the kept best weights into the model.
  void restore_best();
  /// Writes a checkpoint of the model, optimizer and state (with the best weights: to resume).
  void save_checkpoint(const std::string& path, bool with_optimizer, bool with_best) const;

  /// Called after every epoch, after the callbacks (checkpoints are written by then).
  std::function<void(const EpochRecord&)> on_epoch_end;

 private:
  std::map<std::string, double> train_epoch(BatchSource& train, const LrSchedule& schedule);
  bool distributed() const { return comm_ && comm_->world_size() > 1; }

  IntentClassifier model_;
  TrainerOptions options_;
  c10::Device device_;
  Precision precision_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  TrainingState state_;
  StateDict best_;  ///< best weights so far, on the CPU
  std::shared_ptr<Communicator> comm_;
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<AdversarialAttack> attack_;  ///< null unless options.adversarial is enabled
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::string stop_reason_, stop_message_;  ///< set by request_stop
};

}  // namespace mmintent
