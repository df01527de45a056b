#pragma once
/// The multimodal intent classifier: text and/or image encoders, a fusion (concatenation or a
/// gated multimodal unit) and a softmax head. Missing modalities are masked, never fed as data.

#include "mmintent/core/batch.h"
#include "mmintent/models/image_encoder.h"
#include "mmintent/models/text_encoder.h"

#include <torch/nn/modules/container/sequential.h>

namespace mmintent {

/// Example: `FusionOptions().type("gated").dim(128)`.
struct FusionOptions {
  /// "concat": [text * mask, image * mask, masks]; "gated": a gated multimodal unit
  /// h = z * tanh(W_t t) + (1 - z) * tanh(W_i i), z = sigmoid(W_z [t, i, masks]).
  TORCH_ARG(std::string, type) = "concat";
  /// Width of the gated unit's output (unused by "concat").
  TORCH_ARG(int64_t, dim) = 128;
};

/// Example: `HeadOptions().hidden({128}).dropout(0.2)`.
struct HeadOptions {
  TORCH_ARG(std::vector<int64_t>, hidden) = std::vector<int64_t>{128};
  TORCH_ARG(double, dropout) = 0.2;
};

/// Example: `IntentClassifierOptions().num_classes(12).use_image(false).text(text_options)`.
struct IntentClassifierOptions {
  TORCH_ARG(int64_t, num_classes) = 0;
  TORCH_ARG(bool, use_text) = true;
  TORCH_ARG(bool, use_image) = true;
  TORCH_ARG(TextEncoderOptions, text) = {};
  TORCH_ARG(ImageEncoderOptions, image) = {};
  TORCH_ARG(FusionOptions, fusion) = {};
  TORCH_ARG(HeadOptions, head) = {};
};

class IntentClassifierImpl : public torch::nn::Module {
 public:
  explicit IntentClassifierImpl(IntentClassifierOptions options);
  void reset();
  /// Logits [B,num_classes] for a batch (its labels are not used).
  torch::Tensor forward(const Batch& batch);
  /// Softmax probabilities [B,num_classes], computed in eval mode without gradients.
  torch::Tensor predict_proba(const Batch& batch);

  IntentClassifierOptions options;

 private:
  torch::Tensor fuse(const Batch& batch);

  TextEncoder text_{nullptr};
  ImageEncoder image_{nullptr};
  torch::nn::Linear gate_text_{nullptr}, gate_image_{nullptr}, gate_z_{nullptr};
  torch::nn::Sequential head_{nullptr};
};
TORCH_MODULE(IntentClassifier);

}  // namespace mmintent
