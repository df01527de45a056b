#include "mmintent/training/adversarial.h"

#include "mmintent/error.h"
#include "mmintent/models/detail/embedding_delta.h"
#include "mmintent/models/intent_classifier.h"

#include <torch/torch.h>

#include <algorithm>

namespace mmintent {

at::Tensor forward_perturbed(IntentClassifierImpl& model, const Batch& batch,
                             const Perturbation& perturbation) {
  if (perturbation.empty()) return model.forward(batch);
  Batch perturbed = batch;  // shares the tensors; only the perturbed inputs are replaced
  at::Tensor text_delta;
  for (const auto& [name, delta] : perturbation) {
    if (name == "text") {
      text_delta = delta;
    } else {
      auto& input = perturbed.inputs.at(name);
      input.data = input.data + delta.to(input.data.scalar_type());
    }
  }
  detail::EmbeddingDeltaScope scope(text_delta.defined() ? &text_delta : nullptr);
  return model.forward(perturbed);
}

namespace adversarial {

at::Tensor sample_norms(const at::Tensor& x) {
  return x.to(torch::kFloat).reshape({x.size(0), -1}).norm(2, 1);
}

at::Tensor unit_direction(const at::Tensor& g, const at::Tensor& valid) {
  auto masked = g.to(torch::kFloat) * valid.to(g.device(), torch::kFloat);
  const auto norms = sample_norms(masked);
  const auto inverse = torch::where(norms > 0, norms.reciprocal(), torch::zeros_like(norms));
  std::vector<int64_t> shape(static_cast<size_t>(masked.dim()), 1);
  shape[0] = masked.size(0);
  return masked * inverse.view(shape);
}

at::Tensor project_to_ball(const at::Tensor& delta, double epsilon) {
  const auto norms = sample_norms(delta);
  const auto scale = torch::where(norms > epsilon, epsilon / norms, torch::ones_like(norms));
  std::vector<int64_t> shape(static_cast<size_t>(delta.dim()), 1);
  shape[0] = delta.size(0);
  return delta * scale.view(shape).to(delta.scalar_type());
}

}  // namespace adversarial

AdversarialAttack::AdversarialAttack(AdversarialOptions options, const IntentClassifierImpl& model)
    : options_(std::move(options)) {
  const auto& o = options_;
  const auto fail = [](const std::string& key, const std::string& message) {
    throw Error("train.adversarial." + key + ": " + message);
  };
  if (o.method != "none" && o.method != "fgm" && o.method != "pgd") {
    fail("method", "'" + o.method + "' is not one of none, fgm, pgd");
  }
  if (!(o.epsilon > 0)) fail("epsilon", "must be > 0");
  if (o.method == "pgd" && o.steps < 1) fail("steps", "must be >= 1");
  if (o.method == "pgd" && !(o.alpha > 0)) fail("alpha", "must be > 0");
  if (!(o.weight >= 0)) fail("weight", "must be >= 0");
  if (model.is_ensemble()) fail("method", "an ensemble is not trained");
  if (o.modalities.empty()) {
    for (const char* name : {"text", "image"}) {
      if (model.options.uses(name)) modalities_.push_back(name);
    }
    if (modalities_.empty()) fail("modalities", "the model uses neither text nor image, the inputs it can perturb");
  } else {
    for (const auto& name : o.modalities) {
      if (name != "text" && name != "image") fail("modalities", "'" + name + "' is not one of text, image");
      if (!model.options.uses(name)) fail("modalities", "the model does not use '" + name + "'");
      if (std::find(modalities_.begin(), modalities_.end(), name) != modalities_.end()) {
        fail("modalities", "'" + name + "' is listed twice");
      }
      modalities_.push_back(name);
    }
  }
  embedding_dim_ = model.options.text().embedding_dim();
}

Perturbation AdversarialAttack::zeros(const Batch& batch) const {
  Perturbation out;
  for (const auto& name : modalities_) {
    const auto* input = batch.find(name);
    if (!input || !input->data.defined()) continue;
    const auto options = torch::TensorOptions().dtype(torch::kFloat).device(input->data.device());
    at::Tensor zero = name == "text"
                          ? torch::zeros({input->data.size(0), input->data.size(1), embedding_dim_}, options)
                          : torch::zeros(input->data.sizes(), options);
    out[name] = zero.requires_grad_(true);
  }
  return out;
}

Perturbation AdversarialAttack::valid_positions(const Batch& batch) const {
  Perturbation out;
  for (const auto& name : modalities_) {
    const auto* input = batch.find(name);
    if (!input || !input->data.defined()) continue;
    const auto device = input->data.device();
    const int64_t B = input->data.size(0);
    if (name == "text") {
      const int64_t T = input->data.size(1);
      const auto lengths = input->lengths.to(device, torch::kLong).view({B, 1});
      const auto t = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(device)).view({1, T});
      out[name] = (t < lengths).to(torch::kFloat).unsqueeze(2);  // [B,T,1]
    } else {
      std::vector<int64_t> shape(static_cast<size_t>(input->data.dim()), 1);
      shape[0] = B;
      out[name] = input->mask.defined() ? input->mask.to(device, torch::kFloat).view(shape)
                                        : torch::ones(shape, torch::TensorOptions().device(device));
    }
  }
  return out;
}

Perturbation AdversarialAttack::attack(const Batch& batch, const Perturbation& clean,
                                       const LossOf& loss_of) const {
  const auto valid = valid_positions(batch);
  Perturbation grads, delta;
  for (const auto& [name, zero] : clean) {
    const auto g = zero.grad();
    grads[name] = g.defined() ? g.detach() : torch::zeros_like(zero).detach();
    delta[name] = torch::zeros_like(zero).detach();
  }
  const bool pgd = options_.method == "pgd";
  const int64_t steps = pgd ? options_.steps : 1;
  const double step = pgd ? options_.alpha : options_.epsilon;
  for (int64_t k = 0; k < steps; ++k) {
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, d] : delta) {
        d = d + step * adversarial::unit_direction(grads.at(name), valid.at(name));
        if (pgd) d = adversarial::project_to_ball(d, options_.epsilon);
      }
    }
    if (k + 1 == steps) break;
    // The gradient at the new point, for the next step (not into the parameters' grads).
    Perturbation point;
    std::vector<at::Tensor> inputs;
    for (const auto& [name, d] : delta) {
      point[name] = d.detach().requires_grad_(true);
      inputs.push_back(point[name]);
    }
    const auto loss = loss_of(point);
    const auto g = torch::autograd::grad({loss}, inputs, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                         /*create_graph=*/false, /*allow_unused=*/true);
    size_t i = 0;
    for (const auto& [name, p] : point) {
      grads[name] = g[i].defined() ? g[i].detach() : torch::zeros_like(p).detach();
      ++i;
    }
  }
  return delta;
}

}  // namespace mmintent
