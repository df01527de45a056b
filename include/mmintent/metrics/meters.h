#pragma once
/// Meters: what the trainer measures over a pass, batch by batch. A meter accumulates, reports
/// named values, resets, and keeps its whole state as counts that add up: the sum of the
/// ranks' counts is the meter over all their shards, which is how a data-parallel run gets
/// exact metrics (training/trainer.h sums them).
///
/// A new metric is one Meter (with a static `metric_names()` and `make(num_classes)`) and its
/// registration: one more type in `TrainMeters` or `ValidationMeters` below. The trainer
/// reports it as "<split>.<name>", metrics.jsonl records it, and early stopping may watch it
/// (reported_metric_names lists it for the config check, without building any meter).

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mmintent {

/// What a meter sees of one batch (or of a whole pass).
struct MeterInput {
  /// [N,K] probabilities or logits (only their order matters to the meters below); may be
  /// undefined when only a loss is known.
  at::Tensor scores;
  /// [N] int64 gold classes; entries outside [0, K) (no label, or an untrained out-of-scope
  /// sample) are left out of the classification meters. May be undefined.
  at::Tensor labels;
  double loss_sum = 0;     ///< summed per-sample loss
  int64_t loss_count = 0;  ///< samples the loss sum is over
};

class Meter {
 public:
  virtual ~Meter() = default;
  /// The names of the values it reports ("loss", "accuracy", ...).
  virtual std::vector<std::string> names() const = 0;
  virtual void add(const MeterInput& input) = 0;
  virtual std::map<std::string, double> values() const = 0;
  virtual void reset() = 0;
  /// The whole state, as numbers that add up across shards.
  virtual std::vector<double> counts() const = 0;
  virtual void set_counts(const std::vector<double>& counts) = 0;
};

/// A meter of one ratio (0 without a denominator), its counts (numerator, denominator).
class RatioMeter : public Meter {
 public:
  explicit RatioMeter(std::string name) : name_(std::move(name)) {}
  std::vector<std::string> names() const override { return {name_}; }
  std::map<std::string, double> values() const override;
  void reset() override { numerator_ = 0, denominator_ = 0; }
  std::vector<double> counts() const override { return {numerator_, denominator_}; }
  void set_counts(const std::vector<double>& counts) override;

 protected:
  double numerator_ = 0, denominator_ = 0;

 private:
  std::string name_;
};

/// "loss": loss_sum / loss_count.
class LossMeter : public RatioMeter {
 public:
  LossMeter() : RatioMeter(metric_names()[0]) {}
  static std::vector<std::string> metric_names() { return {"loss"}; }
  static std::unique_ptr<Meter> make(int64_t num_classes);
  void add(const MeterInput& input) override;
};

/// "accuracy": arg-max hits / samples labelled with one of the K classes.
class AccuracyMeter : public RatioMeter {
 public:
  AccuracyMeter() : RatioMeter(metric_names()[0]) {}
  static std::vector<std::string> metric_names() { return {"accuracy"}; }
  static std::unique_ptr<Meter> make(int64_t num_classes);
  void add(const MeterInput& input) override;
};

/// "top<k>_accuracy": the gold class among the k best / labelled samples.
class TopKMeter : public RatioMeter {
 public:
  explicit TopKMeter(int64_t k) : RatioMeter(metric_name(k)), k_(k) {}
  static std::string metric_name(int64_t k) { return "top" + std::to_string(k) + "_accuracy"; }
  void add(const MeterInput& input) override;

 private:
  int64_t k_;
};

/// "top3_accuracy".
class Top3Meter : public TopKMeter {
 public:
  Top3Meter() : TopKMeter(3) {}
  static std::vector<std::string> metric_names() { return {metric_name(3)}; }
  static std::unique_ptr<Meter> make(int64_t num_classes);
};

/// "macro_f1" and "weighted_f1" from a K x K confusion matrix (metrics/classification.h).
class F1Meter : public Meter {
 public:
  explicit F1Meter(int64_t num_classes);
  static std::vector<std::string> metric_names() { return {"macro_f1", "weighted_f1"}; }
  static std::unique_ptr<Meter> make(int64_t num_classes);
  std::vector<std::string> names() const override { return metric_names(); }
  void add(const MeterInput& input) override;
  std::map<std::string, double> values() const override;
  void reset() override;
  std::vector<double> counts() const override { return confusion_; }
  void set_counts(const std::vector<double>& counts) override;

 private:
  int64_t k_;
  std::vector<double> confusion_;  ///< [gold * K + predicted]
};

using Meters = std::vector<std::unique_ptr<Meter>>;

/// A registration: the meters of one pass, in order. `names` needs no meter (nor LibTorch's
/// kernels: the config check calls it); `make` builds them for a model of K classes.
template <class... M>
struct MeterSet {
  static Meters make(int64_t num_classes) {
    Meters meters;
    (meters.push_back(M::make(num_classes)), ...);
    return meters;
  }
  static std::vector<std::string> names(const std::string& prefix) {
    std::vector<std::string> out;
    for (const auto& names : {M::metric_names()...}) {
      for (const auto& name : names) out.push_back(prefix + "." + name);
    }
    return out;
  }
};

/// The registrations: a training pass ("train.*") and a validation pass ("val.*").
using TrainMeters = MeterSet<LossMeter, AccuracyMeter>;
using ValidationMeters = MeterSet<LossMeter, AccuracyMeter, F1Meter, Top3Meter>;

inline Meters train_meters(int64_t num_classes) { return TrainMeters::make(num_classes); }
inline Meters validation_meters(int64_t num_classes) { return ValidationMeters::make(num_classes); }

/// Every "<split>.<name>" the trainer reports from its meters (what early stopping may watch),
/// sorted.
inline std::vector<std::string> reported_metric_names() {
  auto out = TrainMeters::names("train");
  const auto val = ValidationMeters::names("val");
  out.insert(out.end(), val.begin(), val.end());
  std::sort(out.begin(), out.end());
  return out;
}

/// Each meter's values, prefixed "<prefix>.".
std::map<std::string, double> meter_values(const Meters& meters, const std::string& prefix);
/// All meters' counts end to end, and back (sizes checked).
std::vector<double> meter_counts(const Meters& meters);
void set_meter_counts(Meters& meters, const std::vector<double>& counts);

}  // namespace mmintent
