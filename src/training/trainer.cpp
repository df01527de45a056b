#include "mmintent/training/trainer.h"

#include "mmintent/core/log.h"
#include "mmintent/core/seed.h"
#include "mmintent/error.h"
#include "mmintent/evaluation/metrics.h"
#include "mmintent/evaluation/predictions.h"
#include "mmintent/training/device.h"
#include "mmintent/training/interrupt.h"
#include "mmintent/training/precision.h"
#include "mmintent/training/progress.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
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
      early_stopping_(options_.early_stopping),
      comm_(std::move(comm)) {
  if (options_.epochs < 1) throw Error("train.epochs must be >= 1");
  if (options_.accumulation_steps < 1) throw Error("train.accumulation_steps must be >= 1");
  if (options_.grad_clip < 0) throw Error("train.grad_clip must be >= 0");
  // cuDNN tries the convolution algorithms for each input shape once and keeps the fastest.
  if (device_.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
  model_->to(device_);
  optimizer_ = make_optimizer(model_->parameters(), options_.optimizer);
  writes_ = !options_.run_dir.empty() && (!comm_ || comm_->rank() == 0);
  if (writes_) fs::create_directories(options_.run_dir);
  if (distributed()) {
    reducer_ = std::make_unique<GradientReducer>(*comm_, model_->parameters(),
                                                 options_.gradient_bucket_bytes);
    state_.world_size = comm_->world_size();
  }
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
  early_stopping_.set_state(state_.early_stopping);
  log::info("trainer", "resumed from " + checkpoint_path + " after epoch " +
                           std::to_string(state_.epochs_completed) + " (step " +
                           std::to_string(state_.global_step) + ")");
  // Drop metric lines of epochs after the checkpoint: they are about to be recomputed.
  if (writes_) {
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
  auto p = collect_predictions(model_, source, device_, precision_);
  // Everything as counts, which add up exactly over the ranks' shards: the loss sum, the
  // samples with a loss, the labelled samples, top-3 hits and the confusion matrix. Samples
  // labelled past the model's classes (untrained out-of-scope samples) are left out of the
  // confusion matrix: these metrics are about the trained classes.
  const int64_t K = model_->options.num_classes();
  std::vector<double> counts(4 + static_cast<size_t>(K * K), 0.0);
  counts[0] = p.loss * static_cast<double>(p.loss_samples);
  counts[1] = static_cast<double>(p.loss_samples);
  if (p.labels.defined() && p.labels.numel() > 0) {
    counts[2] = static_cast<double>(p.labels.numel());
    const auto known = p.labels.ge(0).logical_and(p.labels.lt(K));
    const auto probs = p.probs.index({known});
    const auto gold = p.labels.index({known});
    const auto pred = probs.argmax(1);
    const auto top = std::get<1>(probs.topk(std::min<int64_t>(3, K), 1));
    counts[3] = top.eq(gold.unsqueeze(1)).any(1).sum().item<double>();
    const auto confusion = at::bincount(gold * K + pred, {}, K * K).to(at::kDouble).contiguous();
    std::copy(confusion.data_ptr<double>(), confusion.data_ptr<double>() + K * K, counts.begin() + 4);
  }
  if (distributed()) counts = all_reduce_sum(*comm_, counts);
  std::map<std::string, double> out;
  out[prefix + ".loss"] = distributed() ? (counts[1] > 0 ? counts[0] / counts[1] : 0.0) : p.loss;
  if (counts[2] > 0) {
    std::vector<std::vector<int64_t>> confusion(K, std::vector<int64_t>(K));
    for (int64_t g = 0; g < K; ++g) {
      for (int64_t q = 0; q < K; ++q) confusion[g][q] = static_cast<int64_t>(counts[4 + g * K + q]);
    }
    const auto m = metrics_from_confusion(std::move(confusion));
    out[prefix + ".accuracy"] = m.accuracy;
    out[prefix + ".macro_f1"] = m.macro_f1;
    out[prefix + ".weighted_f1"] = m.weighted_f1;
    out[prefix + ".top3_accuracy"] = m.count ? counts[3] / static_cast<double>(m.count) : 0.0;
  }
  return out;
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
  Progress progress("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(options_.epochs),
                    batches, options_.progress);
  double loss_sum = 0, window_loss = 0;
  int64_t correct = 0, seen = 0, labelled = 0, window_samples = 0;
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
      at::Tensor logits;
      {
        AutocastGuard autocast(device_, precision_);
        logits = model_->forward(b);
      }
      logits = logits.to(torch::kFloat);  // the loss and its gradient in fp32
      auto per_sample = per_sample_loss(logits, b, options_.loss);  // hard, soft, rejected
      auto loss = per_sample.sum() / static_cast<double>(window_samples);
      const double batch_loss = per_sample.sum().item<double>();
      // Data-parallel, a non-finite loss is found at the step, from the sum over the ranks,
      // so that every rank stops at the same point.
      if (!std::isfinite(batch_loss) && !dist) {
        throw fail("loss", batch_loss);
      }
      loss.backward();
      loss_sum += batch_loss;
      window_loss += batch_loss;
      // Accuracy over samples with a label (a feedback sample may carry only a rejected intent).
      correct += logits.argmax(1).eq(b.labels).sum().item<int64_t>();
      labelled += b.labels.ge(0).sum().item<int64_t>();
      seen += b.size();
    }

    bool stop = !dist && stop_requested();
    if ((i + 1) % accum == 0 || i + 1 == batches) {
      if (dist) {
        // One set of collectives per step: the gradients, with the window's loss and any
        // rank's stop request riding along.
        const auto summed = reducer_->reduce({window_loss, stop_requested() ? 1.0 : 0.0});
        if (!std::isfinite(summed[0])) throw fail("loss (summed over the ranks)", summed[0]);
        stop = summed[1] > 0;
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
      optimizer_->step();
      ++state_.global_step;
    }
    progress.update(i + 1, "loss " + fmt(loss_sum / std::max<int64_t>(1, seen)));
    if (stop) {
      throw Interrupted("interrupted during epoch " + std::to_string(epoch + 1) + " at batch " +
                        std::to_string(i + 1) + "/" + std::to_string(batches) + "; " +
                        (epoch > 0 ? "last.pt holds epoch " + std::to_string(epoch) +
                                         ": resume with --resume auto"
                                   : std::string("no epoch was completed")));
    }
  }
  progress.finish("loss " + fmt(loss_sum / std::max<int64_t>(1, seen)));
  if (dist) {
    const auto totals = all_reduce_sum(*comm_, {loss_sum, static_cast<double>(correct),
                                                static_cast<double>(labelled), static_cast<double>(seen)});
    loss_sum = totals[0];
    correct = static_cast<int64_t>(totals[1]);
    labelled = static_cast<int64_t>(totals[2]);
    seen = static_cast<int64_t>(totals[3]);
    // Batch-norm running statistics differ per rank (each saw its own shard): their mean goes
    // into validation and the checkpoints, the same on every rank.
    average_buffers(*comm_, *model_);
  }
  return {{"train.loss", seen ? loss_sum / seen : 0.0},
          {"train.accuracy", labelled ? static_cast<double>(correct) / labelled : 0.0},
          {"lr", schedule.lr_at(std::max<int64_t>(0, state_.global_step - 1))}};
}

void Trainer::write_metrics_line(const EpochRecord& record) {
  if (!writes_) return;
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
  const bool write = writes_;
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
    bool stop = early_stopping_.should_stop(epoch);
    if (distributed()) {
      // Decided once, on rank 0, and applied on every rank.
      const auto st = early_stopping_.state();
      const auto d = broadcast(*comm_, std::vector<double>{record.improved ? 1.0 : 0.0, stop ? 1.0 : 0.0,
                                        st.has_best ? 1.0 : 0.0, st.best_value,
                                        static_cast<double>(st.best_epoch),
                                        static_cast<double>(st.stalls),
                                        static_cast<double>(st.evaluations)}, 0);
      record.improved = d[0] > 0;
      stop = d[1] > 0;
      EarlyStopping::State decided;
      decided.has_best = d[2] > 0;
      decided.best_value = d[3];
      decided.best_epoch = static_cast<int64_t>(d[4]);
      decided.stalls = static_cast<int64_t>(d[5]);
      decided.evaluations = static_cast<int64_t>(d[6]);
      early_stopping_.set_state(decided);
    }
    state_.epochs_completed = epoch + 1;
    state_.early_stopping = early_stopping_.state();
    if (record.improved) {
      best_ = copy_state(*model_, /*to_cpu=*/true);
      if (write && options_.save_best) {
        save_checkpoint((dir / "best.pt").string(), *model_, optimizer_.get(), state_, nullptr,
                        device_);
      }
    }
    record.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // The metrics line goes first: a process killed between the two leaves one line too many,
    // which resume() drops, never a checkpoint whose epoch has no line.
    write_metrics_line(record);
    if (write && options_.save_last) {
      save_checkpoint((dir / "last.pt").string(), *model_, optimizer_.get(), state_, &best_,
                      device_);
    }

    std::string line = "epoch " + std::to_string(record.epoch) + ":";
    for (const auto& [k, v] : record.metrics) line += " " + k + "=" + fmt(v);
    line += record.improved ? " (best)" : "";
    log::info("trainer", line);
    result.history.push_back(record);
    if (on_epoch_end) on_epoch_end(record);

    if (stop) {
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
