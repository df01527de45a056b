#pragma once
/// Low-rank adapters (LoRA; Hu et al. 2021) over a trained model: for each adapted weight
/// W [out, in], two small matrices A [r, in] and B [out, r], and W + (alpha / r) B A in W's
/// place in every forward pass while the model's own weights stay as they are. B starts at
/// zero, so a fresh adapter changes nothing; only A and B are trained. `merge_into` folds an
/// adapter into the weights: a plain model again, as fast as before.
///
/// Example:
///   auto adapter = LowRankAdapter(*model, LowRankOptions().rank(8).alpha(16));
///   model->attach_adapter(adapter);   // forward passes now see W + delta
///   ... train adapter->parameters() ...
///   model->merge_adapter();           // W += delta; the adapter is gone

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

namespace mmintent {

/// Example: `LowRankOptions().rank(8).alpha(16).targets({"linear", "rnn"})`.
struct LowRankOptions {
  TORCH_ARG(int64_t, rank) = 8;
  /// The delta is scaled by alpha / rank, so that changing the rank needs no new learning rate.
  TORCH_ARG(double, alpha) = 16;
  /// What is adapted: "linear" (every linear layer's weight: the head, the gated fusion, the
  /// encoders' projections), "rnn" (the recurrent layers' input matrices, weight_ih_l*, of
  /// each layer and direction) and "embedding" (token embeddings: a word the base model never
  /// saw in training can move on its own).
  TORCH_ARG(std::vector<std::string>, targets) = std::vector<std::string>{"linear", "rnn"};
};

class LowRankAdapterImpl : public torch::nn::Module {
 public:
  /// A pair of matrices for each weight of `model` that `options.targets` selects. Throws
  /// c10::Error when the options are out of range or select nothing. Registers "A<i>" and "B<i>"
  /// for target i, in the model's parameter order.
  LowRankAdapterImpl(const torch::nn::Module& model, LowRankOptions options);
  /// A as a linear layer's default initialisation (Kaiming uniform), B zero.
  void reset();

  /// The qualified names of the adapted weights ("head.3.weight", "text_encoder.rnn.weight_ih_l0").
  const std::vector<std::string>& targets() const { return targets_; }
  /// (alpha / rank) B_i A_i, shaped like target i's weight.
  torch::Tensor delta(std::size_t i) const;
  /// Parameters of the adapter and of the weights it adapts.
  int64_t adapter_parameters() const;
  int64_t adapted_parameters() const;

  /// While alive, forward passes of `model` on this thread see W + delta for every target.
  /// `model` is the module the adapter was built for (checked by name and shape).
  class Scope {
   public:
    Scope(const LowRankAdapterImpl& adapter, torch::nn::Module& model);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
  };

  /// Throws c10::Error naming the first target `model` lacks or shapes otherwise.
  void check(const torch::nn::Module& model) const;
  /// W += delta for every target of `model`, without gradients (checked first: all or none).
  void merge_into(torch::nn::Module& model) const;

  LowRankOptions options;

 private:
  std::vector<std::string> targets_;
  std::vector<std::vector<int64_t>> shapes_;  ///< of each target's weight
  std::vector<torch::Tensor> a_, b_;
};
TORCH_MODULE(LowRankAdapter);

}  // namespace mmintent
