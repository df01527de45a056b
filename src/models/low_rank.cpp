#include "mmintent/models/low_rank.h"

#include "mmintent/models/detail/weight_view.h"

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

namespace mmintent {
namespace {

/// A recurrent layer's input matrix: "<...>.weight_ih_l<k>" or "<...>.weight_ih_l<k>_reverse".
bool is_rnn_input_weight(const std::string& name) {
  const auto dot = name.rfind('.');
  return name.compare(dot == std::string::npos ? 0 : dot + 1, 11, "weight_ih_l") == 0;
}

/// A layer whose forward reads its `weight` member (LibTorch's Linear and Embedding): the
/// adapted weight is swapped in for a scope. `member` points into `layer`, which keeps it alive.
struct MemberWeight {
  std::shared_ptr<torch::nn::Module> layer;
  torch::Tensor* member = nullptr;
  bool linear = false;  ///< else an embedding
};

/// The linear and embedding layers of `model`, by the qualified name of their weight.
std::map<std::string, MemberWeight> member_weights(const torch::nn::Module& model) {
  std::map<std::string, MemberWeight> out;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(item.value())) {
      out.emplace(item.key() + ".weight", MemberWeight{linear, &linear->weight, true});
    } else if (auto embedding = std::dynamic_pointer_cast<torch::nn::EmbeddingImpl>(item.value())) {
      out.emplace(item.key() + ".weight", MemberWeight{embedding, &embedding->weight, false});
    }
  }
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

/// The model's weight `name`, checked against the shape the adapter was built for.
const torch::Tensor& target_weight(const torch::OrderedDict<std::string, torch::Tensor>& params,
                                   const std::string& name, const std::vector<int64_t>& shape) {
  const auto* weight = params.find(name);
  TORCH_CHECK(weight != nullptr, "LowRankAdapter: the model has no weight '", name,
              "' (the adapter was built for another architecture)");
  TORCH_CHECK(weight->sizes().vec() == shape, "LowRankAdapter: the model's '", name, "' is ",
              shape_text(weight->sizes().vec()), ", the adapter's ", shape_text(shape));
  return *weight;
}

}  // namespace

LowRankAdapterImpl::LowRankAdapterImpl(const torch::nn::Module& model, LowRankOptions options_)
    : options(std::move(options_)) {
  TORCH_CHECK(options.rank() > 0, "LowRankAdapter: rank must be > 0, got ", options.rank());
  TORCH_CHECK(options.alpha() > 0, "LowRankAdapter: alpha must be > 0, got ", options.alpha());
  bool linear = false, rnn = false, embedding = false;
  for (const auto& t : options.targets()) {
    TORCH_CHECK(t == "linear" || t == "rnn" || t == "embedding", "LowRankAdapter: unknown target '", t,
                "' (linear, rnn or embedding)");
    (t == "linear" ? linear : t == "rnn" ? rnn : embedding) = true;
  }
  std::set<std::string> layer_weights;
  for (const auto& [name, layer] : member_weights(model)) {
    if (layer.linear ? linear : embedding) layer_weights.insert(name);
  }
  const auto params = model.named_parameters();
  for (const auto& p : params) {
    const auto& name = p.key();
    if (name.rfind("lora.", 0) == 0) continue;  // an adapter attached to the model already
    if (!layer_weights.count(name) && !(rnn && is_rnn_input_weight(name))) continue;
    TORCH_CHECK(p.value().dim() == 2, "LowRankAdapter: '", name, "' is not a matrix");
    targets_.push_back(name);
    shapes_.push_back(p.value().sizes().vec());
  }
  TORCH_CHECK(!targets_.empty(), "LowRankAdapter: the model has no weight the targets select");
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    const auto& w = params[targets_[i]];
    const auto opts = torch::TensorOptions().dtype(w.dtype()).device(w.device());
    const int64_t out = shapes_[i][0], in = shapes_[i][1];
    a_.push_back(register_parameter("A" + std::to_string(i), torch::empty({options.rank(), in}, opts)));
    b_.push_back(register_parameter("B" + std::to_string(i), torch::empty({out, options.rank()}, opts)));
  }
  reset();
}

void LowRankAdapterImpl::reset() {
  torch::NoGradGuard no_grad;
  for (auto& a : a_) torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  for (auto& b : b_) b.zero_();
}

torch::Tensor LowRankAdapterImpl::delta(std::size_t i) const {
  const double scale = options.alpha() / static_cast<double>(options.rank());
  return torch::matmul(b_.at(i), a_.at(i)) * scale;
}

int64_t LowRankAdapterImpl::adapter_parameters() const {
  int64_t n = 0;
  for (std::size_t i = 0; i < a_.size(); ++i) n += a_[i].numel() + b_[i].numel();
  return n;
}

int64_t LowRankAdapterImpl::adapted_parameters() const {
  int64_t n = 0;
  for (const auto& s : shapes_) n += s[0] * s[1];
  return n;
}

struct LowRankAdapterImpl::Scope::Impl {
  std::vector<std::pair<MemberWeight, torch::Tensor>> swapped;  ///< layer, its own weight
  std::unordered_map<const c10::TensorImpl*, std::size_t> viewed;  ///< other weights, by tensor
  detail::WeightView view;
  std::optional<detail::WeightViewScope> scope;
};

LowRankAdapterImpl::Scope::Scope(const LowRankAdapterImpl& adapter, torch::nn::Module& model)
    : impl_(std::make_unique<Impl>()) {
  adapter.check(model);  // before any weight is swapped: a refusal leaves the model as it was
  const auto params = model.named_parameters();
  const auto layers = member_weights(model);
  for (std::size_t i = 0; i < adapter.targets_.size(); ++i) {
    const auto& w = params[adapter.targets_[i]];
    if (const auto it = layers.find(adapter.targets_[i]); it != layers.end()) {
      // LibTorch's Linear and Embedding read their `weight` member: the sum stands in for it
      // until the scope ends (the registered parameter, what is saved and optimised, is untouched).
      impl_->swapped.emplace_back(it->second, w);
      *it->second.member = w + adapter.delta(i);
    } else {
      impl_->viewed.emplace(w.unsafeGetTensorImpl(), i);
    }
  }
  if (!impl_->viewed.empty()) {
    const auto* viewed = &impl_->viewed;
    const auto* owner = &adapter;
    impl_->view = [viewed, owner](const at::Tensor& w) {
      const auto it = viewed->find(w.unsafeGetTensorImpl());
      return it == viewed->end() ? at::Tensor() : w + owner->delta(it->second);
    };
    impl_->scope.emplace(&impl_->view);
  }
}

LowRankAdapterImpl::Scope::~Scope() {
  for (auto& [layer, weight] : impl_->swapped) *layer.member = weight;
}

void LowRankAdapterImpl::check(const torch::nn::Module& model) const {
  const auto params = model.named_parameters();
  for (std::size_t i = 0; i < targets_.size(); ++i) target_weight(params, targets_[i], shapes_[i]);
}

void LowRankAdapterImpl::merge_into(torch::nn::Module& model) const {
  check(model);  // every target first: nothing is half merged
  torch::NoGradGuard no_grad;
  const auto params = model.named_parameters();
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    auto w = params[targets_[i]];
    w.add_(delta(i).to(w.dtype()));
  }
}

}  // namespace mmintent
