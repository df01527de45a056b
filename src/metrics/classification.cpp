#include "mmintent/metrics/classification.h"

#include "mmintent/error.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace mmintent {

ClassificationMetrics compute_metrics(const std::vector<int64_t>& predicted,
                                      const std::vector<int64_t>& gold, int64_t num_classes) {
  if (predicted.size() != gold.size()) throw Error("compute_metrics: size mismatch");
  std::vector<std::vector<int64_t>> confusion(num_classes, std::vector<int64_t>(num_classes, 0));
  for (size_t i = 0; i < gold.size(); ++i) {
    const auto g = gold[i], p = predicted[i];
    if (g < 0 || g >= num_classes || p < 0 || p >= num_classes) {
      throw Error("compute_metrics: class index out of range");
    }
    ++confusion[g][p];
  }
  return metrics_from_confusion(std::move(confusion));
}

ClassificationMetrics metrics_from_confusion(std::vector<std::vector<int64_t>> confusion) {
  ClassificationMetrics m;
  const auto num_classes = static_cast<int64_t>(confusion.size());
  for (const auto& row : confusion) {
    if (static_cast<int64_t>(row.size()) != num_classes) throw Error("metrics_from_confusion: not square");
  }
  m.confusion = std::move(confusion);
  int64_t correct = 0;
  for (int64_t c = 0; c < num_classes; ++c) {
    correct += m.confusion[c][c];
    for (int64_t k = 0; k < num_classes; ++k) m.count += m.confusion[c][k];
  }
  m.accuracy = m.count ? static_cast<double>(correct) / m.count : 0.0;
  m.top_k[1] = m.accuracy;

  m.per_class.resize(num_classes);
  int64_t present = 0;
  for (int64_t c = 0; c < num_classes; ++c) {
    auto& cm = m.per_class[c];
    const int64_t tp = m.confusion[c][c];
    for (int64_t k = 0; k < num_classes; ++k) {
      cm.support += m.confusion[c][k];
      cm.predicted += m.confusion[k][c];
    }
    cm.precision = cm.predicted ? static_cast<double>(tp) / cm.predicted : 0.0;
    cm.recall = cm.support ? static_cast<double>(tp) / cm.support : 0.0;
    cm.f1 = (cm.precision + cm.recall) > 0
                ? 2 * cm.precision * cm.recall / (cm.precision + cm.recall)
                : 0.0;
    if (cm.support > 0 || cm.predicted > 0) {
      ++present;
      m.macro_precision += cm.precision;
      m.macro_recall += cm.recall;
      m.macro_f1 += cm.f1;
    }
    if (m.count) m.weighted_f1 += cm.f1 * cm.support / static_cast<double>(m.count);
  }
  if (present) {
    m.macro_precision /= present;
    m.macro_recall /= present;
    m.macro_f1 /= present;
  }
  return m;
}

ClassificationMetrics compute_metrics(const at::Tensor& probs, const at::Tensor& labels,
                                      const std::vector<int64_t>& top_ks) {
  if (probs.dim() != 2 || labels.dim() != 1 || probs.size(0) != labels.size(0)) {
    throw Error("compute_metrics: expected probs [N,K] and labels [N]");
  }
  const auto p = probs.detach().to(at::kCPU, at::kFloat);
  const auto y = labels.detach().to(at::kCPU, at::kLong).contiguous();
  const auto pred = p.argmax(1).contiguous();
  const auto* pp = pred.data_ptr<int64_t>();
  const auto* yp = y.data_ptr<int64_t>();
  std::vector<int64_t> predicted(pp, pp + pred.numel()), gold(yp, yp + y.numel());
  auto m = compute_metrics(predicted, gold, probs.size(1));
  for (int64_t k : top_ks) {
    if (k < 1) throw Error("compute_metrics: top-k needs k >= 1");
    const int64_t kk = std::min<int64_t>(k, probs.size(1));
    if (m.count == 0) {
      m.top_k[k] = 0;
      continue;
    }
    auto topk = std::get<1>(p.topk(kk, 1));
    auto hit = topk.eq(y.unsqueeze(1)).any(1);
    m.top_k[k] = hit.to(at::kDouble).mean().item<double>();
  }
  return m;
}

}  // namespace mmintent
