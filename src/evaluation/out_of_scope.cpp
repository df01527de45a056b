#include "mmintent/evaluation/out_of_scope.h"

#include "mmintent/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

namespace mmintent {

OosMetrics oos_metrics(const std::vector<int64_t>& predicted, const std::vector<int64_t>& gold,
                       int64_t oos_index) {
  if (predicted.size() != gold.size()) throw Error("oos_metrics: size mismatch");
  OosMetrics m;
  int64_t in_correct = 0, oos_hit = 0, oos_predicted = 0, correct = 0;
  for (size_t i = 0; i < gold.size(); ++i) {
    const bool is_oos = gold[i] == oos_index, said_oos = predicted[i] == oos_index;
    oos_predicted += said_oos;
    correct += predicted[i] == gold[i];
    if (is_oos) {
      ++m.oos_count;
      oos_hit += said_oos;
    } else {
      ++m.in_scope_count;
      in_correct += predicted[i] == gold[i];
    }
  }
  auto ratio = [](int64_t a, int64_t b) { return b ? static_cast<double>(a) / b : 0.0; };
  m.in_scope_accuracy = ratio(in_correct, m.in_scope_count);
  m.oos_recall = ratio(oos_hit, m.oos_count);
  m.oos_precision = ratio(oos_hit, oos_predicted);
  m.oos_f1 = m.oos_recall + m.oos_precision > 0
                 ? 2 * m.oos_recall * m.oos_precision / (m.oos_recall + m.oos_precision)
                 : 0.0;
  m.accuracy = ratio(correct, static_cast<int64_t>(gold.size()));
  return m;
}

std::vector<int64_t> threshold_decisions(const at::Tensor& probs, double threshold,
                                         int64_t oos_index) {
  const auto p = probs.detach().to(at::kCPU, at::kFloat);
  auto [top, arg] = p.max(1);
  top = top.contiguous();
  arg = arg.contiguous();
  const float* tp = top.data_ptr<float>();
  const int64_t* ap = arg.data_ptr<int64_t>();
  std::vector<int64_t> out(static_cast<size_t>(p.size(0)));
  for (int64_t i = 0; i < p.size(0); ++i) out[i] = tp[i] < threshold ? oos_index : ap[i];
  return out;
}

double choose_oos_threshold(const at::Tensor& probs, const std::vector<int64_t>& gold,
                            int64_t oos_index) {
  const auto p = probs.detach().to(at::kCPU, at::kFloat);
  if (p.size(0) != static_cast<int64_t>(gold.size())) throw Error("choose_oos_threshold: size mismatch");
  auto [top, arg] = p.max(1);
  top = top.contiguous();
  arg = arg.contiguous();
  const float* tp = top.data_ptr<float>();
  const int64_t* ap = arg.data_ptr<int64_t>();
  const auto n = static_cast<int64_t>(gold.size());
  // Sweep thresholds upwards through the sorted top probabilities. With threshold t, samples
  // with top < t are rejected. Score(t) = in-scope correct above t + OOS samples below t.
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return tp[a] < tp[b]; });
  int64_t score = 0;  // threshold 0: nothing rejected
  for (int64_t i = 0; i < n; ++i) score += gold[i] != oos_index && ap[i] == gold[i];
  int64_t best = score;
  double best_t = 0.0;
  for (int64_t k = 0; k < n;) {
    // Reject every sample whose top probability equals tp[order[k]] (ties move together).
    const float v = tp[order[k]];
    while (k < n && tp[order[k]] == v) {
      const int64_t i = order[k++];
      if (gold[i] == oos_index) ++score;
      else if (ap[i] == gold[i]) --score;
    }
    if (score > best) {
      best = score;
      // Any t in (v, next value] rejects exactly these; take the midpoint for robustness.
      const double next = k < n ? tp[order[k]] : 1.0;
      best_t = std::min(1.0, (static_cast<double>(v) + next) / 2.0);
      if (k == n) best_t = std::nextafter(static_cast<double>(v), 2.0);
    }
  }
  return std::min(1.0, best_t);
}

}  // namespace mmintent
