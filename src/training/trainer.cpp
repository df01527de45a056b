#include "mmintent/training/trainer.h"

#include "mmintent/core/log.h"
#include "mmintent/core/seed.h"
#include "mmintent/error.h"
#include "mmintent/metrics/meters.h"
#include "mmintent/training/predictions.h"
#include "mmintent/training/device.h"
#include "mmintent/training/interrupt.h"
#include "mmintent/training/precision.h"
#include "mmintent/training/detail/progress.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

namespace mmintent {
namespace fs = std::filesystem;
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string non_finite_message(const std::string& what, double value, int64_t epoch,
                               int64_t batch, int64_t batches, int64_t step) {
  const std::string shown = std::isnan(value) ? "NaN" : (value > 0 ? "Inf" : "-Inf");
  return "training diverged: " + what + " is " + shown + " at epoch " +
         std::to_string(epoch) + ", batch " + std::to_string(batch) + "/" +
         std::to_string(batches) + " (optimizer step " + std::to_string(step) +
         "); the weights were not updated and the checkpoints on disk are those of " +
         (epoch > 1 ? "epoch " + std::to_string(epoch - 1) : std::string("no epoch yet")) +
         ". Lower train.optimizer.lr, set train.grad_clip, or check the data";
}

}  // namespace

Trainer::Trainer(IntentClassifier model, TrainerOptions options, std::shared_ptr<Communicator> comm)
    : model_(std::move(model)),
      options_(std::move(options)),
      device_(resolve_device(options_.device)),
      precision_(parse_precision(options_.precision)),
      comm_(std::move(comm)) {
  if (options_.epochs < 1) throw Error("train.epochs must be >= 1");
  if (options_.accumulation_steps < 1) throw Error("train.accumulation_steps must be >= 1");
  if (options_.grad_clip < 0) throw Error("train.grad_clip must be >= 0");
  // cuDNN tries the convolution algorithms for each input shape once and keeps the fastest.
  if (device_.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
  model_->to(device_);
  if (options_.adversarial.enabled()) {
    attack_ = std::make_unique<AdversarialAttack>(options_.adversarial, *model_);
  }
  optimizer_ = make_optimizer(model_->parameters(), options_.optimizer);
  if (distributed()) {
    reducer_ = std::make_unique<GradientReducer>(*comm_, model_->parameters(),
                                                 options_.gradient_bucket_bytes);
    state_.world_size = comm_->world_size();
  }
  // The trainer's own callbacks, in their fixed order (training/callbacks.h); only rank 0 (or a
  // single process) writes files.
  callbacks_.push_back(std::make_shared<EarlyStoppingCallback>(options_.early_stopping));
  const auto& files = options_.files;
  if (files.any() && (!comm_ || comm_->rank() == 0)) {
    for (const auto& path : {files.best_checkpoint, files.last_checkpoint, files.final_weights, files.metrics_log,
                             files.steps_log}) {
      if (!path.empty() && fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
    }
    if (!files.metrics_log.empty()) callbacks_.push_back(std::make_shared<MetricsLogCallback>(files.metrics_log));
    if (!files.steps_log.empty()) callbacks_.push_back(std::make_shared<StepsLogCallback>(files.steps_log));
    callbacks_.push_back(std::make_shared<CheckpointCallback>(
        options_.save_best ? files.best_checkpoint : std::string(),
        options_.save_last ? files.last_checkpoint : std::string(), files.final_weights));
  }
  callbacks_.push_back(std::make_shared<EpochLogCallback>());
}

void Trainer::add_callback(std::shared_ptr<Callback> callback) {
  callbacks_.push_back(std::move(callback));
}

void Trainer::request_stop(std::string reason, std::string message) {
  stop_reason_ = std::move(reason);
  stop_message_ = std::move(message);
}

void Trainer::remember_best() { best_ = copy_state(*model_, /*to_cpu=*/true); }

void Trainer::restore_best() { load_state(*model_, best_, "best weights"); }

void Trainer::save_checkpoint(const std::string& path, bool with_optimizer, bool with_best) const {
  mmintent::save_checkpoint(path, *model_, with_optimizer ? optimizer_.get() : nullptr, state_,
                            with_best ? &best_ : nullptr, device_);
}

Trainer::~Trainer() = default;

void Trainer::resume(const std::string& checkpoint_path) {
  auto data = load_checkpoint(checkpoint_path, *model_, optimizer_.get(), device_,
                              /*restore_rng=*/true);
  const int64_t world = comm_ ? comm_->world_size() : 1;
  if (data.state.world_size != world) {
    throw CheckpointError(checkpoint_path + " was written by a run of " +
                          std::to_string(data.state.world_size) + " process(es); this run has " +
                          std::to_string(world) + ". Resume with the same number of processes " +
                          "(the shards and the global batch depend on it), or start a new run");
  }
  state_ = data.state;
  best_ = std::move(data.best);
  log::info("trainer", "resumed from " + checkpoint_path + " after epoch " +
                           std::to_string(state_.epochs_completed) + " (step " +
                           std::to_string(state_.global_step) + ")");
  for (const auto& callback : callbacks_) callback->on_resume(*this);
}

std::map<std::string, double> Trainer::evaluate(BatchSource& source, const std::string& prefix) {
  auto p = collect_predictions(model_, source, device_, precision_);
  // Meters keep counts, which add up exactly over the ranks' shards. Samples labelled past the
  // model's classes (untrained out-of-scope samples) are left out of the classification
  // meters: these metrics are about the trained classes.
  auto meters = validation_meters(model_->options.num_classes());
  const MeterInput input{p.probs, p.labels, p.loss_sum, p.loss_samples};
  for (auto& meter : meters) meter->add(input);
  if (distributed()) set_meter_counts(meters, all_reduce_sum(*comm_, meter_counts(meters)));
  return meter_values(meters, prefix);
}

std::map<std::string, double> Trainer::train_epoch(BatchSource& train, const LrSchedule& schedule) {
  model_->train();
  const int64_t epoch = state_.epochs_completed;
  const bool dist = distributed();
  if (dist) {
    // Each rank draws its own dropout masks from the seed, the epoch and its rank alone, so a
    // resumed run draws on every rank what the uninterrupted one drew.
    torch::manual_seed(mix_seed(options_.seed, static_cast<uint64_t>(epoch),
                                 0xD0D0ULL + static_cast<uint64_t>(comm_->rank())));
  }
  train.start_epoch(epoch);
  const int64_t batches = train.num_batches();
  const int64_t accum = options_.accumulation_steps;
  detail::Progress progress("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(options_.epochs),
                    batches, options_.progress);
  auto meters = train_meters(model_->options.num_classes());
  double loss_sum = 0, window_loss = 0;  // for the progress line and the divergence check
  int64_t seen = 0, window_samples = 0;
  // The learning curve's interval (restarted every epoch, so a resumed run logs the same points).
  double curve_loss = 0;
  int64_t curve_samples = 0, epoch_steps = 0;
  for (int64_t i = 0; i < batches; ++i) {
    auto batch = train.next();
    if (!batch) throw Error("training data ended early: batch " + std::to_string(i + 1) +
                            " of " + std::to_string(batches) + " is missing");
    if (i % accum == 0) {
      optimizer_->zero_grad();
      // The loss of each micro-batch is divided by the samples of its whole window, so a
      // short last window weighs each sample the same as a full one.
      // Data-parallel: the samples of the window over all ranks, so that summing the ranks'
      // gradients gives the gradient of the global batch's mean loss.
      window_samples = 0;
      window_loss = 0;
      for (int64_t j = i; j < std::min(batches, i + accum); ++j) {
        window_samples += train.global_batch_size_at(j);
      }
    }
    auto b = batch->to(device_, /*non_blocking=*/true);
    const bool empty = b.size() == 0;  // this rank's part of a short last global batch
    // Buffers (batch-norm running statistics) change in the forward pass: kept so that a
    // batch that turns out to diverge leaves the model exactly as it was before it.
    std::vector<at::Tensor> buffers_before;
    if (!empty) {
      for (const auto& buffer : model_->buffers()) buffers_before.push_back(buffer.clone());
    }
    const auto fail = [&](const std::string& what, double value) {
      torch::NoGradGuard no_grad;
      auto buffers = model_->buffers();
      if (buffers_before.size() == buffers.size()) {
        for (size_t k = 0; k < buffers.size(); ++k) buffers[k].copy_(buffers_before[k]);
      }
      optimizer_->zero_grad();
      return TrainingError(non_finite_message(what, value, epoch + 1, i + 1, batches,
                                              state_.global_step + 1));
    };
    if (!empty) {
      // The forward pass with `perturbation` added to the inputs (none: the plain one).
      const auto forward = [&](const Perturbation& perturbation) {
        at::Tensor out;
        {
          AutocastGuard autocast(device_, precision_);
          out = perturbation.empty() ? model_->forward(b) : forward_perturbed(*model_, b, perturbation);
        }
        return out.to(torch::kFloat);  // the loss and its gradient in fp32
      };
      // Adversarial training: the clean pass adds zero perturbations whose grads the backward
      // pass fills with the loss's gradient with respect to the inputs.
      const Perturbation clean = attack_ ? attack_->zeros(b) : Perturbation{};
      at::Tensor logits = forward(clean);
      auto per_sample = per_sample_loss(logits, b, options_.loss);  // hard, soft, rejected
      auto loss = per_sample.sum() / static_cast<double>(window_samples);
      const double batch_loss = per_sample.sum().item<double>();
      // Data-parallel, a non-finite loss is found at the step, from the sum over the ranks,
      // so that every rank stops at the same point.
      if (!std::isfinite(batch_loss) && !dist) {
        throw fail("loss", batch_loss);
      }
      loss.backward();
      if (attack_ && !clean.empty()) {
        // Batch-norm statistics stay those of the clean pass: the adversarial passes' updates
        // are undone.
        std::vector<at::Tensor> buffers_clean;
        for (const auto& buffer : model_->buffers()) buffers_clean.push_back(buffer.clone());
        const auto loss_of = [&](const Perturbation& p) {
          return per_sample_loss(forward(p), b, options_.loss).sum() / static_cast<double>(window_samples);
        };
        const auto delta = attack_->attack(b, clean, loss_of);
        const auto adv_per_sample = per_sample_loss(forward(delta), b, options_.loss);
        const double adv_loss = adv_per_sample.sum().item<double>();
        if (!std::isfinite(adv_loss) && !dist) throw fail("adversarial loss", adv_loss);
        // Data-parallel, a non-finite adversarial loss shows in the reduced gradient's norm.
        (adv_per_sample.sum() * (attack_->options().weight / static_cast<double>(window_samples))).backward();
        torch::NoGradGuard no_grad;
        auto buffers = model_->buffers();
        for (size_t k = 0; k < buffers.size(); ++k) buffers[k].copy_(buffers_clean[k]);
      }
      loss_sum += batch_loss;
      window_loss += batch_loss;
      // Accuracy counts samples with a label (a feedback sample may carry only a rejected
      // intent); the loss counts every sample.
      const MeterInput input{logits.detach(), b.labels, batch_loss, b.size()};
      for (auto& meter : meters) meter->add(input);
      seen += b.size();
    }

    bool stop = !dist && stop_requested();
    if ((i + 1) % accum == 0 || i + 1 == batches) {
      double step_loss = window_loss;
      if (dist) {
        // One set of collectives per step: the gradients, with the window's loss and any
        // rank's stop request riding along.
        const auto summed = reducer_->reduce({window_loss, stop_requested() ? 1.0 : 0.0});
        if (!std::isfinite(summed[0])) throw fail("loss (summed over the ranks)", summed[0]);
        stop = summed[1] > 0;
        step_loss = summed[0];
      }
      // The global gradient norm (clipped to grad_clip when set; an infinite bound only
      // measures it): a NaN or Inf gradient stops the run before it reaches the weights.
      const double max_norm =
          options_.grad_clip > 0 ? options_.grad_clip : std::numeric_limits<double>::infinity();
      const double grad_norm = torch::nn::utils::clip_grad_norm_(model_->parameters(), max_norm);
      if (!std::isfinite(grad_norm)) {
        throw fail("gradient norm", grad_norm);
      }
      schedule.apply(*optimizer_, state_.global_step);
      const double step_lr = schedule.lr_at(state_.global_step);
      optimizer_->step();
      ++state_.global_step;
      ++epoch_steps;
      curve_loss += step_loss;
      curve_samples += window_samples;
      const int64_t every = options_.log_every_steps;
      if (every > 0 && (epoch_steps % every == 0 || i + 1 == batches)) {
        StepRecord point;
        point.step = state_.global_step;
        point.epoch = epoch + 1;
        point.loss = curve_loss / static_cast<double>(std::max<int64_t>(1, curve_samples));
        point.lr = step_lr;
        point.samples = curve_samples;
        for (const auto& callback : callbacks_) callback->on_step(*this, point);
        curve_loss = 0;
        curve_samples = 0;
      }
    }
    progress.update(i + 1, "loss " + detail::format_fixed(loss_sum / std::max<int64_t>(1, seen)));
    if (stop) {
      throw Interrupted("interrupted during epoch " + std::to_string(epoch + 1) + " at batch " +
                        std::to_string(i + 1) + "/" + std::to_string(batches) + "; " +
                        (epoch > 0 ? "last.pt holds epoch " + std::to_string(epoch) +
                                         ": resume with --resume auto"
                                   : std::string("no epoch was completed")));
    }
  }
  progress.finish("loss " + detail::format_fixed(loss_sum / std::max<int64_t>(1, seen)));
  if (dist) {
    set_meter_counts(meters, all_reduce_sum(*comm_, meter_counts(meters)));
    // Batch-norm running statistics differ per rank (each saw its own shard): their mean goes
    // into validation and the checkpoints, the same on every rank.
    average_buffers(*comm_, *model_);
  }
  auto out = meter_values(meters, "train");
  out["lr"] = schedule.lr_at(std::max<int64_t>(0, state_.global_step - 1));
  return out;
}

FitResult Trainer::fit(BatchSource& train, BatchSource* val) {
  const auto& es = options_.early_stopping;
  if (!val && es.metric.rfind("val.", 0) == 0 && (es.enabled || es.restore_best)) {
    throw Error("early_stopping.metric is '" + es.metric + "' but there is no validation split");
  }
  if (train.num_batches() == 0) throw Error("the training split is empty");
  const int64_t steps_per_epoch = ceil_div(train.num_batches(), options_.accumulation_steps);
  const LrSchedule schedule(options_.scheduler, options_.optimizer.lr,
                            steps_per_epoch * options_.epochs);
  if (distributed()) {
    // The ranks must see the same passes (the same samples, batch size and world size) from
    // the same point of the run, or their collectives would not pair up: a rank whose data
    // differs (a file skipped with on_bad_sample: skip on one host only) or that resumed from
    // another checkpoint (or none) is found here, by every rank at once.
    const auto pass = [](const BatchSource* s) {
      double samples = 0;
      if (s) {
        for (int64_t i = 0; i < s->num_batches(); ++i) samples += static_cast<double>(s->global_batch_size_at(i));
      }
      return std::pair<double, double>{s ? static_cast<double>(s->num_batches()) : -1.0, samples};
    };
    const auto [train_batches, train_samples] = pass(&train);
    const auto [val_batches, val_samples] = pass(val);
    const std::vector<double> mine{train_batches, train_samples, val_batches, val_samples,
                                   static_cast<double>(state_.epochs_completed),
                                   static_cast<double>(state_.global_step)};
    const auto theirs = broadcast(*comm_, mine, 0);
    const double differs = all_reduce_sum(*comm_, {theirs != mine ? 1.0 : 0.0})[0];
    if (differs > 0) {
      const auto show = [](const std::vector<double>& v) {
        const auto n = [](double x) { return std::to_string(static_cast<int64_t>(x)); };
        return n(v[1]) + " training samples in " + n(v[0]) + " global batches, " + n(v[3]) +
               " validation samples, resumed after epoch " + n(v[4]) + " (step " + n(v[5]) + ")";
      };
      throw DistributedError("rank " + std::to_string(comm_->rank()) + ": the ranks are not on the same run (" +
                             std::to_string(static_cast<int>(differs)) + " rank(s) differ from rank 0); this rank: " +
                             show(mine) + "; rank 0: " + show(theirs) +
                             ". Every rank needs the same manifests, skipped samples and batch size, "
                             "and to resume, the same last.pt");
    }
    // Every rank starts from rank 0's weights (fresh or resumed).
    broadcast_module(*comm_, *model_, 0, options_.gradient_bucket_bytes);
    log::info("trainer", "data-parallel over " + std::to_string(comm_->world_size()) + " ranks (" +
                             comm_->backend() + "), " + std::to_string(reducer_->num_buckets()) +
                             " gradient bucket(s) per step, global batch " +
                             std::to_string(train.global_batch_size_at(0)));
  }

  for (const auto& callback : callbacks_) callback->on_fit_start(*this);
  FitResult result;
  result.stop_reason = "max_epochs";
  stop_reason_.clear();
  stop_message_.clear();
  while (state_.epochs_completed < options_.epochs) {
    const auto start = std::chrono::steady_clock::now();
    EpochRecord record;
    record.epoch = state_.epochs_completed + 1;
    record.metrics = train_epoch(train, schedule);
    if (val) {
      for (auto& [k, v] : evaluate(*val, "val")) record.metrics[k] = v;
    }
    record.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state_.epochs_completed = record.epoch;
    for (const auto& callback : callbacks_) callback->on_epoch_end(*this, record);
    result.history.push_back(record);
    if (on_epoch_end) on_epoch_end(record);
    if (!stop_reason_.empty()) {
      result.stop_reason = stop_reason_;
      if (!stop_message_.empty()) log::info("trainer", stop_message_);
      break;
    }
  }
  result.epochs_completed = state_.epochs_completed;
  for (const auto& callback : callbacks_) callback->on_fit_end(*this, result);
  return result;
}

}  // namespace mmintent
