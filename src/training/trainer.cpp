#include "mmintent/training/trainer.h"

#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/evaluation/metrics.h"
#include "mmintent/evaluation/predictions.h"
#include "mmintent/training/device.h"
#include "mmintent/training/interrupt.h"
#include "mmintent/training/progress.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mmintent {
namespace fs = std::filesystem;
namespace {

std::string fmt(double v, int precision = 4) {
  std::ostringstream os;
  os.precision(precision);
  os << std::fixed << v;
  return os.str();
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream os;
  os.precision(10);
  os << v;
  return os.str();
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

Trainer::Trainer(IntentClassifier model, TrainerOptions options)
    : model_(std::move(model)),
      options_(std::move(options)),
      device_(resolve_device(options_.device)),
      early_stopping_(options_.early_stopping) {
  if (options_.epochs < 1) throw Error("train.epochs must be >= 1");
  if (options_.accumulation_steps < 1) throw Error("train.accumulation_steps must be >= 1");
  if (options_.grad_clip < 0) throw Error("train.grad_clip must be >= 0");
  model_->to(device_);
  optimizer_ = make_optimizer(model_->parameters(), options_.optimizer);
  if (!options_.run_dir.empty()) fs::create_directories(options_.run_dir);
}

Trainer::~Trainer() = default;

void Trainer::resume(const std::string& checkpoint_path) {
  auto data = load_checkpoint(checkpoint_path, *model_, optimizer_.get(), device_,
                              /*restore_rng=*/true);
  state_ = data.state;
  best_ = std::move(data.best);
  early_stopping_.set_state(state_.early_stopping);
  log::info("trainer", "resumed from " + checkpoint_path + " after epoch " +
                           std::to_string(state_.epochs_completed) + " (step " +
                           std::to_string(state_.global_step) + ")");
  // Drop metric lines of epochs after the checkpoint: they are about to be recomputed.
  if (!options_.run_dir.empty()) {
    const auto path = fs::path(options_.run_dir) / "metrics.jsonl";
    std::ifstream in(path);
    std::vector<std::string> keep;
    std::string line;
    for (int64_t i = 0; i < state_.epochs_completed && std::getline(in, line); ++i) keep.push_back(line);
    in.close();
    std::ofstream out(path, std::ios::trunc);
    for (const auto& l : keep) out << l << '\n';
  }
}

std::map<std::string, double> Trainer::evaluate(BatchSource& source, const std::string& prefix) {
  auto p = collect_predictions(model_, source, device_);
  std::map<std::string, double> out;
  out[prefix + ".loss"] = p.loss;
  if (p.labels.defined() && p.labels.numel() > 0) {
    // Samples labelled past the model's classes (untrained out-of-scope samples) are left out:
    // these metrics are about the trained classes.
    const auto known = p.labels.lt(p.probs.size(1));
    auto m = compute_metrics(p.probs.index({known}), p.labels.index({known}), {1, 3});
    out[prefix + ".accuracy"] = m.accuracy;
    out[prefix + ".macro_f1"] = m.macro_f1;
    out[prefix + ".weighted_f1"] = m.weighted_f1;
    out[prefix + ".top3_accuracy"] = m.top_k.at(3);
  }
  return out;
}

std::map<std::string, double> Trainer::train_epoch(BatchSource& train, const LrSchedule& schedule) {
  model_->train();
  const int64_t epoch = state_.epochs_completed;
  train.start_epoch(epoch);
  const int64_t batches = train.num_batches();
  const int64_t accum = options_.accumulation_steps;
  Progress progress("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(options_.epochs),
                    batches, options_.progress);
  double loss_sum = 0;
  int64_t correct = 0, seen = 0, window_samples = 0;
  for (int64_t i = 0; i < batches; ++i) {
    auto batch = train.next();
    if (!batch) throw Error("training data ended early: batch " + std::to_string(i + 1) +
                            " of " + std::to_string(batches) + " is missing");
    if (i % accum == 0) {
      optimizer_->zero_grad();
      // The loss of each micro-batch is divided by the samples of its whole window, so a
      // short last window weighs each sample the same as a full one.
      window_samples = 0;
      for (int64_t j = i; j < std::min(batches, i + accum); ++j) window_samples += train.batch_size_at(j);
    }
    auto b = batch->to(device_, /*non_blocking=*/true);
    auto logits = model_->forward(b);
    auto per_sample = per_sample_loss(logits, b.labels, options_.loss);
    auto loss = per_sample.sum() / static_cast<double>(window_samples);
    const double batch_loss = per_sample.sum().item<double>();
    if (!std::isfinite(batch_loss)) {
      throw Error("non-finite loss (" + std::to_string(batch_loss) + ") at epoch " +
                  std::to_string(epoch + 1) + ", batch " + std::to_string(i + 1) +
                  "; the last good checkpoint is kept");
    }
    loss.backward();
    loss_sum += batch_loss;
    correct += logits.argmax(1).eq(b.labels).sum().item<int64_t>();
    seen += b.size();

    if ((i + 1) % accum == 0 || i + 1 == batches) {
      if (options_.grad_clip > 0) {
        torch::nn::utils::clip_grad_norm_(model_->parameters(), options_.grad_clip);
      }
      schedule.apply(*optimizer_, state_.global_step);
      optimizer_->step();
      ++state_.global_step;
    }
    progress.update(i + 1, "loss " + fmt(loss_sum / std::max<int64_t>(1, seen)));
    if (stop_requested()) {
      throw Interrupted("interrupted during epoch " + std::to_string(epoch + 1) + " at batch " +
                        std::to_string(i + 1) + "/" + std::to_string(batches) + "; " +
                        (epoch > 0 ? "last.pt holds epoch " + std::to_string(epoch) +
                                         ": resume with --resume auto"
                                   : std::string("no epoch was completed")));
    }
  }
  progress.finish("loss " + fmt(loss_sum / std::max<int64_t>(1, seen)));
  return {{"train.loss", seen ? loss_sum / seen : 0.0},
          {"train.accuracy", seen ? static_cast<double>(correct) / seen : 0.0},
          {"lr", schedule.lr_at(std::max<int64_t>(0, state_.global_step - 1))}};
}

void Trainer::write_metrics_line(const EpochRecord& record) {
  if (options_.run_dir.empty()) return;
  std::ofstream out(fs::path(options_.run_dir) / "metrics.jsonl", std::ios::app);
  out << "{\"epoch\": " << record.epoch;
  for (const auto& [k, v] : record.metrics) out << ", \"" << k << "\": " << json_number(v);
  out << ", \"improved\": " << (record.improved ? "true" : "false")
      << ", \"seconds\": " << json_number(record.seconds) << "}\n";
  if (!out) throw CheckpointError("cannot append to " + (fs::path(options_.run_dir) / "metrics.jsonl").string());
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
  const auto dir = fs::path(options_.run_dir);
  const bool write = !options_.run_dir.empty();

  FitResult result;
  result.stop_reason = "max_epochs";
  while (state_.epochs_completed < options_.epochs) {
    const auto start = std::chrono::steady_clock::now();
    const int64_t epoch = state_.epochs_completed;
    EpochRecord record;
    record.epoch = epoch + 1;
    record.metrics = train_epoch(train, schedule);
    if (val) {
      for (auto& [k, v] : evaluate(*val, "val")) record.metrics[k] = v;
    }
    auto it = record.metrics.find(es.metric);
    if (it == record.metrics.end()) {
      std::string names;
      for (const auto& [k, v] : record.metrics) names += (names.empty() ? "" : ", ") + k;
      throw Error("early_stopping.metric '" + es.metric + "' is not reported; available: " + names);
    }
    record.improved = early_stopping_.update(epoch, it->second);
    state_.epochs_completed = epoch + 1;
    state_.early_stopping = early_stopping_.state();
    if (record.improved) {
      best_ = copy_state(*model_, /*to_cpu=*/true);
      if (write && options_.save_best) {
        save_checkpoint((dir / "best.pt").string(), *model_, optimizer_.get(), state_, nullptr,
                        device_);
      }
    }
    if (write && options_.save_last) {
      save_checkpoint((dir / "last.pt").string(), *model_, optimizer_.get(), state_, &best_,
                      device_);
    }
    record.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    write_metrics_line(record);

    std::string line = "epoch " + std::to_string(record.epoch) + ":";
    for (const auto& [k, v] : record.metrics) line += " " + k + "=" + fmt(v);
    line += record.improved ? " (best)" : "";
    log::info("trainer", line);
    result.history.push_back(record);
    if (on_epoch_end) on_epoch_end(record);

    if (early_stopping_.should_stop(epoch)) {
      result.stop_reason = "early_stopping";
      log::info("trainer", "early stopping after epoch " + std::to_string(record.epoch) + ": " +
                               es.metric + " has not improved for " +
                               std::to_string(early_stopping_.state().stalls) + " evaluation(s)");
      break;
    }
  }

  const auto& st = early_stopping_.state();
  result.epochs_completed = state_.epochs_completed;
  result.best_epoch = st.has_best ? st.best_epoch + 1 : 0;
  result.best_value = st.best_value;
  if (es.restore_best && !best_.empty()) {
    load_state(*model_, best_, "best weights");
    log::info("trainer", "restored the best weights (epoch " + std::to_string(result.best_epoch) +
                             ", " + es.metric + "=" + fmt(st.best_value) + ")");
  }
  if (write) {
    save_checkpoint((dir / "model.pt").string(), *model_, nullptr, state_, nullptr, device_);
  }
  return result;
}

}  // namespace mmintent
