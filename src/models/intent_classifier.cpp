#include "mmintent/models/intent_classifier.h"

#include <torch/torch.h>

#include <optional>

#include <algorithm>

namespace mmintent {
bool IntentClassifierOptions::uses(const std::string& modality) const {
  return std::find(modalities().begin(), modalities().end(), modality) != modalities().end();
}

IntentClassifierImpl::IntentClassifierImpl(IntentClassifierOptions options_)
    : options(std::move(options_)) {
  reset();
}

IntentClassifierImpl::IntentClassifierImpl(std::vector<std::shared_ptr<IntentClassifierImpl>> members,
                                           std::vector<double> temperatures)
    : members_(std::move(members)), temperatures_(std::move(temperatures)) {
  TORCH_CHECK(!members_.empty(), "IntentClassifier: an ensemble needs at least one member");
  TORCH_CHECK(temperatures_.size() == members_.size(), "IntentClassifier: an ensemble needs one temperature per member, got ",
              temperatures_.size(), " for ", members_.size(), " members");
  for (size_t k = 0; k < members_.size(); ++k) TORCH_CHECK(members_[k], "IntentClassifier: ensemble member ", k, " is null");
  options = members_.front()->options;
  for (size_t k = 0; k < members_.size(); ++k) {
    TORCH_CHECK(members_[k]->options.num_classes() == options.num_classes(), "IntentClassifier: ensemble member ", k,
                " has ", members_[k]->options.num_classes(), " classes, member 0 has ", options.num_classes());
    TORCH_CHECK(temperatures_[k] > 0, "IntentClassifier: ensemble member ", k, "'s temperature must be > 0, got ",
                temperatures_[k]);
    register_module("member_" + std::to_string(k), members_[k]);
  }
}

std::pair<torch::Tensor, torch::Tensor> IntentClassifierImpl::ensemble_forward(const Batch& batch, bool features) {
  torch::Tensor mean;
  std::vector<torch::Tensor> parts;
  for (size_t k = 0; k < members_.size(); ++k) {
    torch::Tensor logits;
    if (features) {
      auto [l, h] = members_[k]->forward_with_features(batch);
      logits = l;
      parts.push_back(h.to(torch::kFloat));
    } else {
      logits = members_[k]->forward(batch);
    }
    // In float whatever the autocast: the mean of probabilities, not of bfloat16 roundings.
    auto p = torch::softmax(logits.to(torch::kFloat) / temperatures_[k], 1);
    mean = mean.defined() ? mean + p : p;
  }
  mean = mean / static_cast<double>(members_.size());
  // A probability that underflowed to 0 stays a finite logit (softmax gives it back as ~0).
  auto log_mean = mean.clamp_min(1e-12).log();
  return {log_mean, features ? torch::cat(parts, 1) : torch::Tensor()};
}

void IntentClassifierImpl::reset() {
  TORCH_CHECK(options.num_classes() >= 2, "IntentClassifier: num_classes must be >= 2, got ",
              options.num_classes());
  TORCH_CHECK(!options.modalities().empty(),
              "IntentClassifier: at least one modality (e.g. text or image) must be used");
  const auto& fusion = options.fusion();
  TORCH_CHECK(fusion.type() == "concat" || fusion.type() == "gated",
              "IntentClassifier: fusion type must be concat or gated, got '", fusion.type(), "'");

  encoders_.clear();
  gates_.clear();
  gate_z_ = nullptr;
  std::vector<int64_t> dims;
  for (const auto& name : canonical_order(options.modalities())) {
    const auto it = options.plugins().find(name);
    ModalitySettings settings = it == options.plugins().end() ? ModalitySettings{} : it->second;
    settings.modality = name;
    EncoderContext context{options.text(), options.image(), options.audio(), settings};
    auto encoder = register_module(name + "_encoder", make_modality_encoder(name, context));
    dims.push_back(encoder->output_dim());
    encoders_.emplace_back(name, encoder);
  }
  const auto N = static_cast<int64_t>(encoders_.size());
  int64_t total = 0;
  for (auto d : dims) total += d;

  int64_t fused_dim = 0;
  if (N > 1 && fusion.type() == "gated") {
    TORCH_CHECK(fusion.dim() > 0, "IntentClassifier: fusion dim must be > 0");
    for (int64_t k = 0; k < N; ++k) {
      gates_.push_back(register_module("gate_" + encoders_[k].first,
                                       torch::nn::Linear(dims[k], fusion.dim())));
    }
    // Two modalities: one sigmoid gate per unit; more: a softmax over the modalities per unit.
    gate_z_ = register_module("gate_z", torch::nn::Linear(total + N, (N == 2 ? 1 : N) * fusion.dim()));
    fused_dim = fusion.dim();
  } else {
    // Concatenation; with several modalities their presence flags are appended.
    fused_dim = total + (N > 1 ? N : 0);
  }

  head_ = torch::nn::Sequential();
  int64_t in = fused_dim;
  for (int64_t h : options.head().hidden()) {
    TORCH_CHECK(h > 0, "IntentClassifier: head hidden sizes must be > 0");
    if (options.head().dropout() > 0) head_->push_back(torch::nn::Dropout(options.head().dropout()));
    head_->push_back(torch::nn::Linear(in, h));
    head_->push_back(torch::nn::ReLU());
    in = h;
  }
  if (options.head().dropout() > 0) head_->push_back(torch::nn::Dropout(options.head().dropout()));
  head_->push_back(torch::nn::Linear(in, options.num_classes()));
  register_module("head", head_);
}

std::vector<std::string> IntentClassifierImpl::modalities() const {
  if (is_ensemble()) return members_.front()->modalities();
  std::vector<std::string> out;
  for (const auto& [name, encoder] : encoders_) out.push_back(name);
  return out;
}

std::shared_ptr<ModalityEncoderImpl> IntentClassifierImpl::encoder(const std::string& modality) const {
  for (const auto& [name, encoder] : encoders_) {
    if (name == modality) return encoder;
  }
  return nullptr;
}

torch::Tensor IntentClassifierImpl::fuse(const Batch& batch) {
  if (is_ensemble()) {
    std::vector<torch::Tensor> parts;
    for (const auto& m : members_) parts.push_back(m->fuse(batch).to(torch::kFloat));
    return torch::cat(parts, 1);
  }
  if (!adapter_) return fuse_features(batch);
  LowRankAdapterImpl::Scope adapted(*adapter_, *this);
  return fuse_features(batch);
}

torch::Tensor IntentClassifierImpl::fuse_features(const Batch& batch) {
  std::vector<torch::Tensor> features, masks;
  for (const auto& [name, encoder] : encoders_) {
    const auto* in = batch.find(name);
    TORCH_CHECK(in && in->data.defined(), "IntentClassifier: the batch has no ", name);
    const auto mask = in->mask.defined()
                          ? in->mask.to(torch::kFloat).unsqueeze(1)
                          : torch::ones({in->data.size(0), 1}, in->data.options().dtype(torch::kFloat));
    features.push_back(encoder->encode(*in) * mask);
    masks.push_back(mask);
  }
  const auto N = features.size();
  if (N == 1) return features[0];
  std::vector<torch::Tensor> all = features;
  all.insert(all.end(), masks.begin(), masks.end());
  if (!gate_z_) return torch::cat(all, 1);

  auto z = gate_z_->forward(torch::cat(all, 1));
  if (N == 2) {
    auto h1 = torch::tanh(gates_[0]->forward(features[0]));
    auto h2 = torch::tanh(gates_[1]->forward(features[1]));
    z = torch::sigmoid(z);
    // A missing modality gets no weight: z = 0 without the first, z = 1 without the second.
    z = z * masks[0];
    z = z + (1 - masks[1]) * (1 - z);
    return z * h1 + (1 - z) * h2;
  }
  const int64_t B = z.size(0), D = options.fusion().dim();
  z = z.view({B, static_cast<int64_t>(N), D});
  const auto present = torch::stack(masks, 1);  // [B,N,1]
  // A missing modality gets no weight (a large negative logit; a sample lacking every
  // modality gets equal weights over zero features).
  z = torch::softmax(z.masked_fill(present == 0, -1e4), 1);
  torch::Tensor h;
  for (size_t k = 0; k < N; ++k) {
    auto part = z.select(1, static_cast<int64_t>(k)) * torch::tanh(gates_[k]->forward(features[k]));
    h = k == 0 ? part : h + part;
  }
  return h;
}

torch::Tensor IntentClassifierImpl::forward(const Batch& batch) {
  if (is_ensemble()) return ensemble_forward(batch, /*features=*/false).first;
  if (!adapter_) return head_->forward(fuse_features(batch));
  LowRankAdapterImpl::Scope adapted(*adapter_, *this);
  return head_->forward(fuse_features(batch));
}

std::pair<torch::Tensor, torch::Tensor> IntentClassifierImpl::forward_with_features(const Batch& batch) {
  if (is_ensemble()) return ensemble_forward(batch, /*features=*/true);
  std::optional<LowRankAdapterImpl::Scope> adapted;
  if (adapter_) adapted.emplace(*adapter_, *this);
  auto h = fuse_features(batch);
  auto layer = head_->begin();
  for (size_t i = 0; i + 1 < head_->size(); ++i, ++layer) h = layer->forward(h);
  return {layer->forward(h), h};
}

void IntentClassifierImpl::attach_adapter(LowRankAdapter adapter) {
  TORCH_CHECK(!adapter_, "IntentClassifier: an adapter is attached already (merge it first)");
  TORCH_CHECK(adapter, "IntentClassifier: attach_adapter needs an adapter");
  TORCH_CHECK(!is_ensemble(), "IntentClassifier: an ensemble takes no adapter (adapt one of its members)");
  adapter->check(*this);
  adapter_ = register_module("lora", std::move(adapter));
}

void IntentClassifierImpl::merge_adapter() {
  if (!adapter_) return;
  adapter_->merge_into(*this);
  unregister_module("lora");
  adapter_ = nullptr;
}

torch::Tensor IntentClassifierImpl::predict_proba(const Batch& batch) {
  torch::NoGradGuard no_grad;
  const bool was_training = is_training();
  eval();
  auto probs = torch::softmax(forward(batch), 1);
  train(was_training);
  return probs;
}

}  // namespace mmintent
