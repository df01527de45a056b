#pragma once
/// The multimodal intent classifier: one encoder per modality (text, image, audio, plug-ins; see
/// models/modality_encoder.h), a fusion (concatenation or a gated multimodal unit) and a softmax
/// head. Missing modalities are masked, never fed as data.

#include "mmintent/core/batch.h"
#include "mmintent/models/audio_encoder.h"
#include "mmintent/models/image_encoder.h"
#include "mmintent/models/low_rank.h"
#include "mmintent/models/text_encoder.h"

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <map>
#include <string>
#include <vector>

namespace mmintent {

/// Example: `FusionOptions().type("gated").dim(128)`.
struct FusionOptions {
  /// "concat": [e_1 * m_1, ..., e_N * m_N, m_1, ..., m_N] over the N modalities' features e
  /// and masks m (only e_1 for one modality). "gated": a gated multimodal unit; for two
  /// modalities h = z * tanh(W_1 e_1) + (1 - z) * tanh(W_2 e_2), z = sigmoid(W_z [e, m]);
  /// for more, h = sum_k z_k * tanh(W_k e_k) with z = softmax over k of W_z [e, m] (per
  /// output unit). A missing modality gets no weight.
  TORCH_ARG(std::string, type) = "concat";
  /// Width of the gated unit's output (unused by "concat").
  TORCH_ARG(int64_t, dim) = 128;
};

/// Example: `HeadOptions().hidden({128}).dropout(0.2)`.
struct HeadOptions {
  TORCH_ARG(std::vector<int64_t>, hidden) = std::vector<int64_t>{128};
  TORCH_ARG(double, dropout) = 0.2;
};

/// Example: `IntentClassifierOptions().num_classes(12).modalities({"text"}).text(text_options)`.
struct IntentClassifierOptions {
  TORCH_ARG(int64_t, num_classes) = 0;
  /// The modalities fused, by name; fused in canonical order (core/modality.h) whatever the
  /// order here.
  TORCH_ARG(std::vector<std::string>, modalities) = std::vector<std::string>{"text", "image"};
  TORCH_ARG(TextEncoderOptions, text) = {};
  TORCH_ARG(ImageEncoderOptions, image) = {};
  TORCH_ARG(AudioEncoderOptions, audio) = {};
  TORCH_ARG(FusionOptions, fusion) = {};
  TORCH_ARG(HeadOptions, head) = {};
  /// Plug-in modalities' settings by modality name (`model.plugins` in the config).
  using PluginSettings = std::map<std::string, ModalitySettings>;
  TORCH_ARG(PluginSettings, plugins) = {};

 public:
  bool uses(const std::string& modality) const;
};

class IntentClassifierImpl : public torch::nn::Module {
 public:
  explicit IntentClassifierImpl(IntentClassifierOptions options);
  /// An ensemble of trained classifiers of the same classes over the same inputs: forward()
  /// gives log(mean_k softmax(logits_k / T_k)), each member's probabilities calibrated by its
  /// own temperature, so that softmax(forward()) is their mean; fuse() and the features of
  /// forward_with_features() are the members' side by side. The members are
  /// registered ("member_0", ...): to(), eval() and parameters() reach them. `options` are the
  /// first member's; an ensemble has no encoders of its own (encoder() is null) and takes no
  /// adapter. Throws when there is no member, a temperature is not > 0, or the members'
  /// classes differ in number.
  IntentClassifierImpl(std::vector<std::shared_ptr<IntentClassifierImpl>> members,
                       std::vector<double> temperatures);
  void reset();
  /// Logits [B,num_classes] for a batch (its labels are not used).
  torch::Tensor forward(const Batch& batch);
  /// Softmax probabilities [B,num_classes], computed in eval mode without gradients.
  torch::Tensor predict_proba(const Batch& batch);

  /// The fused features [B, fused_dim] the head reads.
  torch::Tensor fuse(const Batch& batch);
  /// forward()'s logits and the features the head's last layer reads [B, D] (the last hidden
  /// layer's output; the fused features for a head without hidden layers), from one pass: what
  /// a feature-space out-of-scope score (evaluation/out_of_scope.h) fits on.
  std::pair<torch::Tensor, torch::Tensor> forward_with_features(const Batch& batch);
  /// The modalities fused, in order.
  std::vector<std::string> modalities() const;
  /// The encoder of `modality`, or null when the model does not fuse it.
  std::shared_ptr<ModalityEncoderImpl> encoder(const std::string& modality) const;

  /// Adapts the model with `adapter` (built for it; registered as "lora", so its parameters
  /// are the model's and are saved with it): forward() and fuse() see each adapted weight plus
  /// its low-rank delta. Throws when an adapter is attached already.
  void attach_adapter(LowRankAdapter adapter);
  /// The attached adapter, or null.
  LowRankAdapter adapter() const { return adapter_; }
  /// Folds the attached adapter into the weights and removes it (no-op without one).
  void merge_adapter();

  bool is_ensemble() const { return !members_.empty(); }
  /// An ensemble's members and their temperatures, in order (empty for a single model).
  const std::vector<std::shared_ptr<IntentClassifierImpl>>& members() const { return members_; }
  const std::vector<double>& member_temperatures() const { return temperatures_; }

  IntentClassifierOptions options;

 private:
  /// Registered as "<modality>_encoder", in canonical order.
  std::vector<std::pair<std::string, std::shared_ptr<ModalityEncoderImpl>>> encoders_;
  std::vector<torch::nn::Linear> gates_;  ///< "gate_<modality>", one per modality (gated)
  torch::nn::Linear gate_z_{nullptr};
  torch::nn::Sequential head_{nullptr};
  LowRankAdapter adapter_{nullptr};
  std::vector<std::shared_ptr<IntentClassifierImpl>> members_;
  std::vector<double> temperatures_;

  torch::Tensor fuse_features(const Batch& batch);
  /// An ensemble's log mean probabilities and, with `features`, its members' features.
  std::pair<torch::Tensor, torch::Tensor> ensemble_forward(const Batch& batch, bool features);
};
TORCH_MODULE(IntentClassifier);

}  // namespace mmintent
