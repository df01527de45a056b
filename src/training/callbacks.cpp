#include "mmintent/training/callbacks.h"

#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/training/detail/progress.h"
#include "mmintent/training/trainer.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace mmintent {
namespace {

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream os;
  os.precision(10);
  os << v;
  return os.str();
}

}  // namespace

// ---- Early stopping.

EarlyStoppingCallback::EarlyStoppingCallback(EarlyStoppingOptions options)
    : early_stopping_(std::move(options)) {}

void EarlyStoppingCallback::on_resume(Trainer& trainer) {
  early_stopping_.set_state(trainer.state().early_stopping);
}

void EarlyStoppingCallback::on_epoch_end(Trainer& trainer, EpochRecord& record) {
  const auto& es = early_stopping_.options();
  const auto it = record.metrics.find(es.metric);
  if (it == record.metrics.end()) {
    // Neither stopping nor restoring: nothing depends on the metric (e.g. a run without a
    // validation split tracks no best epoch).
    if (!es.enabled && !es.restore_best) return;
    std::string names;
    for (const auto& [k, v] : record.metrics) names += (names.empty() ? "" : ", ") + k;
    throw Error("early_stopping.metric '" + es.metric + "' is not reported; available: " + names);
  }
  const int64_t epoch = record.epoch - 1;  // 0-based
  record.improved = early_stopping_.update(epoch, it->second);
  bool stop = early_stopping_.should_stop(epoch);
  if (Communicator* comm = trainer.communicator()) {
    // Decided once, on rank 0, and applied on every rank.
    const auto st = early_stopping_.state();
    const auto d = broadcast(*comm, std::vector<double>{record.improved ? 1.0 : 0.0, stop ? 1.0 : 0.0,
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
  trainer.mutable_state().early_stopping = early_stopping_.state();
  if (record.improved) trainer.remember_best();
  if (stop) {
    trainer.request_stop("early_stopping",
                         "early stopping after epoch " + std::to_string(record.epoch) + ": " +
                             es.metric + " has not improved for " +
                             std::to_string(early_stopping_.state().stalls) + " evaluation(s)");
  }
}

void EarlyStoppingCallback::on_fit_end(Trainer& trainer, FitResult& result) {
  const auto& st = early_stopping_.state();
  result.best_epoch = st.has_best ? st.best_epoch + 1 : 0;
  result.best_value = st.best_value;
  if (early_stopping_.options().restore_best && trainer.has_best()) {
    trainer.restore_best();
    log::info("trainer", "restored the best weights (epoch " + std::to_string(result.best_epoch) +
                             ", " + early_stopping_.options().metric + "=" + detail::format_fixed(st.best_value) + ")");
  }
}

// ---- The metrics log.

void MetricsLogCallback::on_resume(Trainer& trainer) {
  // Drop the lines of epochs after the checkpoint: they are about to be recomputed.
  std::ifstream in(path_);
  std::vector<std::string> keep;
  std::string line;
  for (int64_t i = 0; i < trainer.state().epochs_completed && std::getline(in, line); ++i) {
    keep.push_back(line);
  }
  in.close();
  std::ofstream out(path_, std::ios::trunc);
  for (const auto& l : keep) out << l << '\n';
}

void MetricsLogCallback::on_epoch_end(Trainer& /*trainer*/, EpochRecord& record) {
  std::ofstream out(path_, std::ios::app);
  out << "{\"epoch\": " << record.epoch;
  for (const auto& [k, v] : record.metrics) out << ", \"" << k << "\": " << json_number(v);
  out << ", \"improved\": " << (record.improved ? "true" : "false")
      << ", \"seconds\": " << json_number(record.seconds) << "}\n";
  if (!out) throw CheckpointError("cannot append to " + path_);
}

// ---- The learning curve.

void StepsLogCallback::on_resume(Trainer& trainer) {
  std::ifstream in(path_);
  std::vector<std::string> keep;
  for (std::string line; std::getline(in, line);) {
    long long step = 0;
    if (std::sscanf(line.c_str(), "{\"step\": %lld", &step) == 1 && step <= trainer.state().global_step) {
      keep.push_back(line);
    }
  }
  in.close();
  std::ofstream out(path_, std::ios::trunc);
  for (const auto& l : keep) out << l << '\n';
}

void StepsLogCallback::on_step(Trainer& /*trainer*/, const StepRecord& r) {
  std::ofstream out(path_, std::ios::app);
  out << "{\"step\": " << r.step << ", \"epoch\": " << r.epoch << ", \"loss\": " << json_number(r.loss)
      << ", \"lr\": " << json_number(r.lr) << ", \"samples\": " << r.samples << "}\n";
  if (!out) throw CheckpointError("cannot append to " + path_);
}

// ---- Checkpoints.

void CheckpointCallback::on_epoch_end(Trainer& trainer, EpochRecord& record) {
  if (record.improved && !best_.empty()) {
    trainer.save_checkpoint(best_, /*with_optimizer=*/true, /*with_best=*/false);
  }
  if (!last_.empty()) trainer.save_checkpoint(last_, /*with_optimizer=*/true, /*with_best=*/true);
}

void CheckpointCallback::on_fit_end(Trainer& trainer, FitResult& /*result*/) {
  if (!final_.empty()) trainer.save_checkpoint(final_, /*with_optimizer=*/false, /*with_best=*/false);
}

// ---- The epoch's log line.

void EpochLogCallback::on_epoch_end(Trainer& /*trainer*/, EpochRecord& record) {
  std::string line = "epoch " + std::to_string(record.epoch) + ":";
  for (const auto& [k, v] : record.metrics) line += " " + k + "=" + detail::format_fixed(v);
  line += record.improved ? " (best)" : "";
  log::info("trainer", line);
}

}  // namespace mmintent
