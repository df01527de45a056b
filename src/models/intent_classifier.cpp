#include "mmintent/models/intent_classifier.h"

#include <torch/torch.h>

namespace mmintent {

IntentClassifierImpl::IntentClassifierImpl(IntentClassifierOptions options_)
    : options(std::move(options_)) {
  reset();
}

void IntentClassifierImpl::reset() {
  TORCH_CHECK(options.num_classes() >= 2, "IntentClassifier: num_classes must be >= 2, got ",
              options.num_classes());
  TORCH_CHECK(options.use_text() || options.use_image(),
              "IntentClassifier: at least one modality (text or image) must be used");
  const auto& fusion = options.fusion();
  TORCH_CHECK(fusion.type() == "concat" || fusion.type() == "gated",
              "IntentClassifier: fusion type must be concat or gated, got '", fusion.type(), "'");
  const bool both = options.use_text() && options.use_image();

  int64_t text_dim = 0, image_dim = 0;
  if (options.use_text()) {
    text_ = register_module("text_encoder", TextEncoder(options.text()));
    text_dim = text_->output_dim();
  }
  if (options.use_image()) {
    image_ = register_module("image_encoder", ImageEncoder(options.image()));
    image_dim = options.image().out_dim();
  }

  int64_t fused_dim = 0;
  if (both && fusion.type() == "gated") {
    TORCH_CHECK(fusion.dim() > 0, "IntentClassifier: fusion dim must be > 0");
    gate_text_ = register_module("gate_text", torch::nn::Linear(text_dim, fusion.dim()));
    gate_image_ = register_module("gate_image", torch::nn::Linear(image_dim, fusion.dim()));
    gate_z_ = register_module("gate_z", torch::nn::Linear(text_dim + image_dim + 2, fusion.dim()));
    fused_dim = fusion.dim();
  } else {
    // Concatenation; with both modalities the two presence flags are appended.
    fused_dim = text_dim + image_dim + (both ? 2 : 0);
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

torch::Tensor IntentClassifierImpl::fuse(const Batch& batch) {
  torch::Tensor text, image, text_mask, image_mask;
  if (options.use_text()) {
    TORCH_CHECK(batch.token_ids.defined(), "IntentClassifier: the batch has no text");
    text_mask = batch.text_mask.defined()
                    ? batch.text_mask.to(torch::kFloat).unsqueeze(1)
                    : torch::ones({batch.token_ids.size(0), 1}, batch.token_ids.options().dtype(torch::kFloat));
    text = text_->forward(batch.token_ids, batch.lengths) * text_mask;
  }
  if (options.use_image()) {
    TORCH_CHECK(batch.images.defined(), "IntentClassifier: the batch has no images");
    image_mask = batch.image_mask.defined()
                     ? batch.image_mask.to(torch::kFloat).unsqueeze(1)
                     : torch::ones({batch.images.size(0), 1}, batch.images.options());
    image = image_->forward(batch.images) * image_mask;
  }
  if (!options.use_image()) return text;
  if (!options.use_text()) return image;
  if (gate_z_) {
    auto ht = torch::tanh(gate_text_->forward(text));
    auto hi = torch::tanh(gate_image_->forward(image));
    auto z = torch::sigmoid(gate_z_->forward(torch::cat({text, image, text_mask, image_mask}, 1)));
    // A missing modality gets no weight: z = 0 without text, z = 1 without an image.
    z = z * text_mask;
    z = z + (1 - image_mask) * (1 - z);
    return z * ht + (1 - z) * hi;
  }
  return torch::cat({text, image, text_mask, image_mask}, 1);
}

torch::Tensor IntentClassifierImpl::forward(const Batch& batch) {
  return head_->forward(fuse(batch));
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
