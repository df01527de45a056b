#include "mmintent/metrics/meters.h"

#include "mmintent/error.h"
#include "mmintent/metrics/classification.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace mmintent {
namespace {

void expect_size(const std::vector<double>& counts, size_t n, const std::string& meter) {
  if (counts.size() != n) {
    throw Error(meter + " meter: expected " + std::to_string(n) + " counts, got " +
                std::to_string(counts.size()));
  }
}

/// The rows of `input` labelled with one of the K classes: (scores, labels).
std::pair<at::Tensor, at::Tensor> labelled_rows(const MeterInput& input) {
  if (!input.scores.defined() || !input.labels.defined() || input.labels.numel() == 0) return {};
  const auto labels = input.labels.to(at::kLong);
  const auto known = labels.ge(0).logical_and(labels.lt(input.scores.size(1)));
  return {input.scores.index({known}), labels.index({known})};
}

}  // namespace

std::map<std::string, double> RatioMeter::values() const {
  return {{name_, denominator_ > 0 ? numerator_ / denominator_ : 0.0}};
}

void RatioMeter::set_counts(const std::vector<double>& counts) {
  expect_size(counts, 2, name_.c_str());
  numerator_ = counts[0];
  denominator_ = counts[1];
}

void LossMeter::add(const MeterInput& input) {
  numerator_ += input.loss_sum;
  denominator_ += static_cast<double>(input.loss_count);
}

void AccuracyMeter::add(const MeterInput& input) {
  const auto [scores, gold] = labelled_rows(input);
  if (!gold.defined()) return;
  numerator_ += scores.argmax(1).eq(gold).sum().item<double>();
  denominator_ += static_cast<double>(gold.numel());
}

void TopKMeter::add(const MeterInput& input) {
  const auto [scores, gold] = labelled_rows(input);
  if (!gold.defined() || gold.numel() == 0) return;
  const auto top = std::get<1>(scores.topk(std::min<int64_t>(k_, scores.size(1)), 1));
  numerator_ += top.eq(gold.unsqueeze(1)).any(1).sum().item<double>();
  denominator_ += static_cast<double>(gold.numel());
}

F1Meter::F1Meter(int64_t num_classes)
    : k_(num_classes), confusion_(static_cast<size_t>(num_classes * num_classes), 0.0) {}

void F1Meter::add(const MeterInput& input) {
  const auto [scores, gold] = labelled_rows(input);
  if (!gold.defined() || gold.numel() == 0) return;
  if (scores.size(1) != k_) {
    throw Error("F1Meter: scores have " + std::to_string(scores.size(1)) + " classes, the meter " +
                std::to_string(k_));
  }
  const auto pred = scores.argmax(1);
  const auto counts = at::bincount(gold * k_ + pred, {}, k_ * k_).to(at::kDouble).cpu().contiguous();
  const double* c = counts.data_ptr<double>();
  for (size_t i = 0; i < confusion_.size(); ++i) confusion_[i] += c[i];
}

std::map<std::string, double> F1Meter::values() const {
  std::vector<std::vector<int64_t>> confusion(static_cast<size_t>(k_), std::vector<int64_t>(static_cast<size_t>(k_)));
  for (int64_t g = 0; g < k_; ++g) {
    for (int64_t q = 0; q < k_; ++q) confusion[g][q] = static_cast<int64_t>(confusion_[g * k_ + q]);
  }
  const auto m = metrics_from_confusion(std::move(confusion));
  return {{"macro_f1", m.macro_f1}, {"weighted_f1", m.weighted_f1}};
}

void F1Meter::reset() { std::fill(confusion_.begin(), confusion_.end(), 0.0); }

void F1Meter::set_counts(const std::vector<double>& counts) {
  expect_size(counts, confusion_.size(), "F1Meter");
  confusion_ = counts;
}

std::unique_ptr<Meter> LossMeter::make(int64_t /*num_classes*/) { return std::make_unique<LossMeter>(); }
std::unique_ptr<Meter> AccuracyMeter::make(int64_t /*num_classes*/) {
  return std::make_unique<AccuracyMeter>();
}
std::unique_ptr<Meter> Top3Meter::make(int64_t /*num_classes*/) { return std::make_unique<Top3Meter>(); }
std::unique_ptr<Meter> F1Meter::make(int64_t num_classes) { return std::make_unique<F1Meter>(num_classes); }

std::map<std::string, double> meter_values(const Meters& meters, const std::string& prefix) {
  std::map<std::string, double> out;
  for (const auto& meter : meters) {
    for (const auto& [name, value] : meter->values()) out[prefix + "." + name] = value;
  }
  return out;
}

std::vector<double> meter_counts(const Meters& meters) {
  std::vector<double> out;
  for (const auto& meter : meters) {
    const auto c = meter->counts();
    out.insert(out.end(), c.begin(), c.end());
  }
  return out;
}

void set_meter_counts(Meters& meters, const std::vector<double>& counts) {
  size_t at = 0;
  for (auto& meter : meters) {
    const size_t n = meter->counts().size();
    if (at + n > counts.size()) throw Error("set_meter_counts: too few counts");
    meter->set_counts(std::vector<double>(counts.begin() + at, counts.begin() + at + n));
    at += n;
  }
  if (at != counts.size()) throw Error("set_meter_counts: too many counts");
}

}  // namespace mmintent
