#include "mmintent/training/loss.h"

#include "mmintent/error.h"

#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

#include <limits>

namespace mmintent {
namespace {

void check_options(const LossOptions& options, int64_t num_classes) {
  if (options.label_smoothing < 0 || options.label_smoothing >= 1) {
    throw Error("loss.label_smoothing must be in [0, 1)");
  }
  if (!options.class_weights.empty() &&
      static_cast<int64_t>(options.class_weights.size()) != num_classes) {
    throw Error("loss.class_weights has " + std::to_string(options.class_weights.size()) +
                " entries, but there are " + std::to_string(num_classes) + " classes");
  }
  if (!(options.rejection_weight >= 0)) throw Error("loss.rejection_weight must be >= 0");
  if (!(options.max_inverse_propensity >= 1)) throw Error("loss: the inverse propensity clip must be >= 1");
  if (!(options.baseline >= 0 && options.baseline <= 1)) throw Error("loss: the baseline must be in [0, 1]");
  if (!(options.distill_alpha >= 0 && options.distill_alpha <= 1)) throw Error("train.distill.alpha must be in [0, 1]");
  if (!(options.distill_temperature > 0)) throw Error("train.distill.temperature must be > 0");
}

/// The class weights as a [K] tensor on the logits' device, or undefined when there are none.
torch::Tensor class_weight_tensor(const at::Tensor& logits, const LossOptions& options) {
  if (options.class_weights.empty()) return {};
  return torch::tensor(options.class_weights, logits.options().dtype(torch::kFloat));
}

/// Smoothed, class-weighted cross-entropy [B] of labels that are all valid class indices.
torch::Tensor hard_loss(const at::Tensor& logits, const at::Tensor& labels,
                        const LossOptions& options) {
  namespace F = torch::nn::functional;
  auto loss = F::cross_entropy(logits, labels,
                               F::CrossEntropyFuncOptions()
                                   .reduction(torch::kNone)
                                   .label_smoothing(options.label_smoothing));
  if (auto w = class_weight_tensor(logits, options); w.defined()) {
    loss = loss * w.index_select(0, labels).to(loss.scalar_type());
  }
  return loss;
}

}  // namespace

LossOptions::Objective parse_objective(const std::string& name) {
  if (name == "supervised") return LossOptions::Objective::supervised;
  if (name == "ips") return LossOptions::Objective::ips;
  if (name == "snips") return LossOptions::Objective::snips;
  throw Error("objective '" + name + "' is not one of supervised, ips, snips");
}

at::Tensor per_sample_loss(const at::Tensor& logits, const at::Tensor& labels,
                           const LossOptions& options) {
  check_options(options, logits.size(1));
  return hard_loss(logits, labels, options);
}

namespace {

/// The loss of the batch's own targets (everything but distillation).
at::Tensor targets_loss(const at::Tensor& logits, const Batch& batch, const LossOptions& options) {
  const int64_t B = logits.size(0), K = logits.size(1);
  check_options(options, K);
  if (!batch.labels.defined() || batch.labels.size(0) != B) {
    throw Error("loss: the batch needs labels [" + std::to_string(B) + "]");
  }
  const auto& soft = batch.soft_targets;
  const auto& rejected = batch.rejected;
  const bool bandit = options.objective != LossOptions::Objective::supervised && batch.shown.defined();
  if (!soft.defined() && !rejected.defined() && !bandit) return hard_loss(logits, batch.labels, options);
  if (soft.defined() && (soft.dim() != 2 || soft.size(0) != B || soft.size(1) != K)) {
    std::string found;
    for (auto s : soft.sizes()) found += (found.empty() ? "" : ",") + std::to_string(s);
    throw Error("loss: soft targets must be [" + std::to_string(B) + "," + std::to_string(K) +
                "], found [" + found + "]");
  }
  if (rejected.defined() && (rejected.dim() != 1 || rejected.size(0) != B)) {
    throw Error("loss: rejected must be [" + std::to_string(B) + "]");
  }

  if (bandit && (batch.shown.dim() != 1 || batch.shown.size(0) != B || !batch.propensity.defined() ||
                 batch.propensity.dim() != 1 || batch.propensity.size(0) != B)) {
    throw Error("loss: shown and propensity must both be [" + std::to_string(B) + "]");
  }

  const auto zero = torch::zeros({B}, logits.options());
  auto hard_rows = batch.labels.ge(0);
  torch::Tensor logged;  // [B] bool: samples that learn through the off-policy objective
  if (bandit) {
    logged = batch.shown.ge(0);
    // Acceptances learn only through their reward; corrections keep their label.
    hard_rows = hard_rows.logical_and(logged.logical_not().logical_or(batch.labels.ne(batch.shown)));
  }
  torch::Tensor soft_rows;
  if (soft.defined()) {
    soft_rows = soft.sum(1).gt(0);
    hard_rows = hard_rows.logical_and(soft_rows.logical_not());
  }
  // Hard rows: the usual loss on the labels (others get a placeholder class and are masked).
  auto loss = torch::where(hard_rows, hard_loss(logits, batch.labels.clamp_min(0), options), zero);

  if (soft.defined()) {
    const auto q = soft.to(logits.scalar_type());
    auto ce = -(q * torch::log_softmax(logits, 1)).sum(1);
    if (auto w = class_weight_tensor(logits, options); w.defined()) {
      ce = ce * (q * w.to(q.scalar_type()).unsqueeze(0)).sum(1);
    }
    loss = loss + torch::where(soft_rows, ce, zero);
  }
  if (bandit) {
    const auto a = batch.shown.clamp_min(0).unsqueeze(1);
    const auto pi = torch::softmax(logits, 1).gather(1, a).squeeze(1);
    const auto p0 = batch.propensity.to(logits.scalar_type());
    const auto inverse = p0.clamp_min(1.0 / options.max_inverse_propensity).reciprocal();
    const auto w = torch::where(logged, pi * inverse, zero);
    const auto reward = batch.labels.eq(batch.shown).to(logits.scalar_type());
    torch::Tensor term;
    if (options.objective == LossOptions::Objective::ips) {
      term = (options.baseline - reward) * w;
    } else {  // snips: the batch's logged samples normalise each other
      const auto n = logged.sum().clamp_min(1).to(logits.scalar_type());
      term = -reward * w / (w.sum() / n).clamp_min(1e-12);
    }
    loss = loss + torch::where(logged, term, zero);
  }
  if (rejected.defined() && options.rejection_weight > 0) {
    // log(1 - p_r) = logsumexp of the other logits - logsumexp of all: stable even as p_r -> 1.
    auto has = rejected.ge(0);
    if (bandit) has = has.logical_and(logged.logical_not());  // a logged rejection is a reward of 0
    const auto r = rejected.clamp_min(0).unsqueeze(1);
    const auto others = logits.scatter(1, r, -std::numeric_limits<double>::infinity());
    const auto log_not_r = torch::logsumexp(others, 1) - torch::logsumexp(logits, 1);
    loss = loss + torch::where(has, -options.rejection_weight * log_not_r, zero);
  }
  return loss;
}

}  // namespace

at::Tensor per_sample_loss(const at::Tensor& logits, const Batch& batch, const LossOptions& options) {
  auto loss = targets_loss(logits, batch, options);
  const auto& q = batch.teacher;
  if (!q.defined() || options.distill_alpha == 0) return loss;
  const int64_t B = logits.size(0), K = logits.size(1);
  if (q.dim() != 2 || q.size(0) != B || q.size(1) != K) {
    throw Error("loss: teacher probabilities must be [" + std::to_string(B) + "," + std::to_string(K) + "]");
  }
  const double T = options.distill_temperature, alpha = options.distill_alpha;
  const auto t = q.to(logits.scalar_type());
  // KL(q || p_T) = sum_k q_k (log q_k - log p_T,k); a zero q_k contributes 0.
  const auto kl = (t * (t.clamp_min(1e-12).log() - torch::log_softmax(logits / T, 1))).sum(1);
  const auto rows = t.sum(1).gt(0);
  return torch::where(rows, (1 - alpha) * loss + alpha * T * T * kl, loss);
}

}  // namespace mmintent
