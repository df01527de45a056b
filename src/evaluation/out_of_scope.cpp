#include "mmintent/evaluation/out_of_scope.h"

#include "mmintent/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <optional>

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

namespace {

/// Each row's top probability (float) and its class, contiguous on the CPU; Error "WHO: size
/// mismatch" when the rows are not one per gold label.
struct TopClass {
  at::Tensor top, arg;
  TopClass(const at::Tensor& probs, const std::vector<int64_t>& gold, const char* who) {
    const auto p = probs.detach().to(at::kCPU, at::kFloat);
    if (p.size(0) != static_cast<int64_t>(gold.size())) throw Error(std::string(who) + ": size mismatch");
    auto [t, a] = p.max(1);
    top = t.contiguous();
    arg = a.contiguous();
  }
};

}  // namespace

namespace {

void check_scores(const std::vector<double>& scores, const std::vector<int64_t>& predicted,
                  const std::vector<int64_t>& gold, const char* who) {
  if (scores.size() != gold.size() || predicted.size() != gold.size()) {
    throw Error(std::string(who) + ": size mismatch (" + std::to_string(scores.size()) + " scores, " +
                std::to_string(predicted.size()) + " predictions, " + std::to_string(gold.size()) + " labels)");
  }
  if (gold.empty()) throw Error(std::string(who) + ": no sample");
}

/// choose_score_threshold, returning `none_rejected` when rejecting nothing is best.
double best_accuracy_threshold(const std::vector<double>& scores, const std::vector<int64_t>& predicted,
                               const std::vector<int64_t>& gold, int64_t oos_index,
                               std::optional<double> none_rejected) {
  const auto n = static_cast<int64_t>(gold.size());
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] < scores[b]; });
  // Right without a threshold: in-scope samples predicted as their intent, out-of-scope ones
  // predicted out of scope. Rejecting a sample makes an out-of-scope one right and an in-scope
  // one wrong (when it was right); one already predicted out of scope does not change.
  int64_t score = 0;
  for (int64_t i = 0; i < n; ++i) score += predicted[i] == gold[i];
  int64_t best = score;
  double best_t = none_rejected ? *none_rejected : scores[order[0]];
  for (int64_t k = 0; k < n;) {
    // Reject every sample of score v (ties move together).
    const double v = scores[order[k]];
    while (k < n && scores[order[k]] == v) {
      const int64_t i = order[k++];
      if (predicted[i] == oos_index) continue;
      if (gold[i] == oos_index) ++score;
      else if (predicted[i] == gold[i]) --score;
    }
    if (score > best) {
      best = score;
      // Any t in (v, next value] rejects exactly these; take the midpoint for robustness.
      best_t = k < n ? (v + scores[order[k]]) / 2.0 : std::nextafter(v, HUGE_VAL);
    }
  }
  return best_t;
}

/// choose_score_threshold_for_loss, returning `all_rejectable` when the budget allows rejecting
/// every correct in-scope sample.
double budget_threshold(const std::vector<double>& scores, const std::vector<int64_t>& predicted,
                        const std::vector<int64_t>& gold, int64_t oos_index, double max_loss,
                        std::optional<double> all_rejectable, const char* who) {
  if (!(max_loss >= 0 && max_loss < 1)) throw Error(std::string(who) + ": max_loss must be in [0, 1)");
  int64_t in_scope = 0;
  std::vector<double> correct;  // scores of the correctly classified in-scope samples
  for (size_t i = 0; i < gold.size(); ++i) {
    if (gold[i] == oos_index) continue;
    ++in_scope;
    if (predicted[i] == gold[i]) correct.push_back(scores[i]);
  }
  if (in_scope == 0) throw Error(std::string(who) + ": no in-scope sample to measure the loss on");
  std::sort(correct.begin(), correct.end());
  // Threshold t rejects the samples with score < t: t = correct[j] rejects at most the j correct
  // ones below it (ties at t stay), and any higher t one more.
  const auto j = static_cast<size_t>(std::floor(max_loss * static_cast<double>(in_scope) + 1e-9));
  if (j < correct.size()) return correct[j];
  if (all_rejectable) return *all_rejectable;
  return std::nextafter(*std::max_element(scores.begin(), scores.end()), HUGE_VAL);
}

/// The top probability and arg-max of each row of `probs`, as scores and predictions.
void top_class(const at::Tensor& probs, const std::vector<int64_t>& gold, const char* who, std::vector<double>& top,
               std::vector<int64_t>& arg) {
  const TopClass t(probs, gold, who);
  const float* tp = t.top.data_ptr<float>();
  const int64_t* ap = t.arg.data_ptr<int64_t>();
  top.assign(tp, tp + gold.size());
  arg.assign(ap, ap + gold.size());
}

}  // namespace

double choose_oos_threshold(const at::Tensor& probs, const std::vector<int64_t>& gold,
                            int64_t oos_index) {
  std::vector<double> top;
  std::vector<int64_t> arg;
  top_class(probs, gold, "choose_oos_threshold", top, arg);
  if (gold.empty()) return 0.0;
  // A probability threshold: 0 when nothing is rejected, at most 1.
  return std::min(1.0, best_accuracy_threshold(top, arg, gold, oos_index, 0.0));
}

double choose_oos_threshold_for_loss(const at::Tensor& probs, const std::vector<int64_t>& gold,
                                     int64_t oos_index, double max_loss) {
  std::vector<double> top;
  std::vector<int64_t> arg;
  top_class(probs, gold, "choose_oos_threshold_for_loss", top, arg);
  // A probability threshold: 1 when every correct in-scope sample may be rejected.
  return budget_threshold(top, arg, gold, oos_index, max_loss, 1.0, "choose_oos_threshold_for_loss");
}

double choose_score_threshold(const std::vector<double>& scores, const std::vector<int64_t>& predicted,
                              const std::vector<int64_t>& gold, int64_t oos_index) {
  check_scores(scores, predicted, gold, "choose_score_threshold");
  return best_accuracy_threshold(scores, predicted, gold, oos_index, std::nullopt);
}

double choose_score_threshold_for_loss(const std::vector<double>& scores, const std::vector<int64_t>& predicted,
                                       const std::vector<int64_t>& gold, int64_t oos_index, double max_loss) {
  check_scores(scores, predicted, gold, "choose_score_threshold_for_loss");
  return budget_threshold(scores, predicted, gold, oos_index, max_loss, std::nullopt,
                          "choose_score_threshold_for_loss");
}

namespace {

/// The columns of [N,K] other than `oos_index`.
at::Tensor in_scope_columns(const at::Tensor& t, int64_t oos_index) {
  if (oos_index < 0 || oos_index >= t.size(1)) return t;
  return at::cat({t.narrow(1, 0, oos_index), t.narrow(1, oos_index + 1, t.size(1) - oos_index - 1)}, 1);
}

}  // namespace

at::Tensor max_prob_scores(const at::Tensor& probs, int64_t oos_index) {
  return std::get<0>(in_scope_columns(probs.to(at::kDouble), oos_index).max(1));
}

at::Tensor energy_scores(const at::Tensor& logits, int64_t oos_index, double temperature) {
  if (!(temperature > 0)) throw Error("energy_scores: the temperature must be > 0");
  return temperature * at::logsumexp(in_scope_columns(logits.to(at::kDouble), oos_index) / temperature, 1);
}

MahalanobisFit fit_mahalanobis(const at::Tensor& features, const std::vector<int64_t>& labels, int64_t oos_index) {
  if (features.dim() != 2 || features.size(0) != static_cast<int64_t>(labels.size())) {
    throw Error("fit_mahalanobis: features [N,D] and N labels expected");
  }
  const auto f = features.to(at::kDouble).contiguous();
  const int64_t d = f.size(1);
  std::map<int64_t, std::vector<int64_t>> rows;  // class -> its rows
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= 0 && labels[i] != oos_index) rows[labels[i]].push_back(static_cast<int64_t>(i));
  }
  if (rows.empty()) throw Error("fit_mahalanobis: no in-scope sample to fit on");
  MahalanobisFit fit;
  std::vector<at::Tensor> means, centred;
  for (const auto& [c, r] : rows) {
    const auto x = f.index_select(0, at::tensor(r, at::kLong));
    const auto mu = x.mean(0);
    means.push_back(mu);
    centred.push_back(x - mu);
  }
  fit.means = at::stack(means);
  const auto z = at::cat(centred);
  auto cov = z.t().mm(z) / static_cast<double>(z.size(0));
  const double ridge = 1e-6 * std::max(cov.diagonal().mean().item<double>(), 1e-12);
  cov = cov + ridge * at::eye(d, cov.options());
  fit.precision = at::linalg_inv(cov);
  return fit;
}

at::Tensor mahalanobis_scores(const MahalanobisFit& fit, const at::Tensor& features) {
  const auto f = features.to(at::kDouble);
  if (f.dim() != 2 || f.size(1) != fit.means.size(1)) throw Error("mahalanobis_scores: features of another width");
  // (f - mu)^T P (f - mu) = f^T P f - 2 f^T P mu + mu^T P mu, for every (row, class).
  const auto fp = f.mm(fit.precision);
  const auto ff = (fp * f).sum(1, /*keepdim=*/true);           // [N,1]
  const auto mp = fit.means.mm(fit.precision);
  const auto mm = (mp * fit.means).sum(1).unsqueeze(0);         // [1,C]
  const auto d2 = (ff - 2 * fp.mm(fit.means.t()) + mm).clamp_min(0);  // [N,C]
  return -std::get<0>(d2.min(1));
}

OosDetection oos_detection(const at::Tensor& scores, const std::vector<int64_t>& gold, int64_t oos_index) {
  const auto s = scores.to(at::kDouble).contiguous();
  if (s.dim() != 1 || s.size(0) != static_cast<int64_t>(gold.size())) throw Error("oos_detection: N scores and N labels expected");
  const double* v = s.data_ptr<double>();
  std::vector<double> in, out;
  for (size_t i = 0; i < gold.size(); ++i) (gold[i] == oos_index ? out : in).push_back(v[i]);
  OosDetection d;
  d.in_scope = static_cast<int64_t>(in.size());
  d.oos = static_cast<int64_t>(out.size());
  if (in.empty() || out.empty()) throw Error("oos_detection: needs in-scope and out-of-scope samples");
  std::sort(in.begin(), in.end());
  std::sort(out.begin(), out.end());
  // AUROC: for each in-scope score, the out-of-scope scores below it (ties half).
  double wins = 0;
  for (const double x : in) {
    const auto lo = std::lower_bound(out.begin(), out.end(), x), hi = std::upper_bound(out.begin(), out.end(), x);
    wins += static_cast<double>(lo - out.begin()) + 0.5 * static_cast<double>(hi - lo);
  }
  d.auroc = wins / (static_cast<double>(in.size()) * static_cast<double>(out.size()));
  // The threshold keeping 95% of the in-scope samples: the score under which 5% of them fall.
  const auto cut = static_cast<size_t>(std::floor(0.05 * static_cast<double>(in.size())));
  const double threshold = in[cut];
  const auto accepted = out.end() - std::lower_bound(out.begin(), out.end(), threshold);
  d.fpr_at_95_tpr = static_cast<double>(accepted) / static_cast<double>(out.size());
  return d;
}

}  // namespace mmintent
