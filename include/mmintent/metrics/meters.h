#pragma once
/// Meters: what the trainer measures over a pass, batch by batch. A meter accumulates, reports
/// named values, resets, and keeps its whole state as counts that add up: the sum of the
/// ranks' counts is the meter over all their shards, which is how a data-parallel run gets
/// exact metrics (training/trainer.h sums them).
///
/// A new metric is one Meter and one line in `train_meters` or `validation_meters`: the
/// trainer reports it as "<split>.<name>", metrics.jsonl records it, and early stopping may
/// watch it (reported_metric_names lists it for the config check).

#include <ATen/core/Tensor.h>

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
  LossMeter() : RatioMeter("loss") {}
  void add(const MeterInput& input) override;
};

/// "accuracy": arg-max hits / samples labelled with one of the K classes.
class AccuracyMeter : public RatioMeter {
 public:
  AccuracyMeter() : RatioMeter("accuracy") {}
  void add(const MeterInput& input) override;
};

/// "top<k>_accuracy": the gold class among the k best / labelled samples.
class TopKMeter : public RatioMeter {
 public:
  explicit TopKMeter(int64_t k) : RatioMeter("top" + std::to_string(k) + "_accuracy"), k_(k) {}
  void add(const MeterInput& input) override;

 private:
  int64_t k_;
};

/// "macro_f1" and "weighted_f1" from a K x K confusion matrix (metrics/classification.h).
class F1Meter : public Meter {
 public:
  explicit F1Meter(int64_t num_classes);
  std::vector<std::string> names() const override { return {"macro_f1", "weighted_f1"}; }
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

/// The meters of a training pass ("train.*") and of a validation pass ("val.*") for a model
/// of `num_classes` outputs: the registrations.
Meters train_meters(int64_t num_classes);
Meters validation_meters(int64_t num_classes);

/// Every "<split>.<name>" the trainer reports from its meters (what early stopping may watch).
std::vector<std::string> reported_metric_names();

/// Each meter's values, prefixed "<prefix>.".
std::map<std::string, double> meter_values(const Meters& meters, const std::string& prefix);
/// All meters' counts end to end, and back (sizes checked).
std::vector<double> meter_counts(const Meters& meters);
void set_meter_counts(Meters& meters, const std::vector<double>& counts);

}  // namespace mmintent
