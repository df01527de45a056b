#include "mmintent/training/distill.h"

#include "mmintent/error.h"
#include "mmintent/training/predictions.h"

#include <torch/torch.h>

namespace mmintent {

at::Tensor teacher_probabilities(IntentClassifier& teacher, BatchSource& source, const c10::Device& device,
                                 Precision precision, int64_t num_samples, double temperature) {
  if (!(temperature > 0)) throw Error("train.distill.temperature must be > 0");
  const auto p = collect_predictions(teacher, source, device, precision);
  const auto index = p.indices.to(torch::kLong);
  if (index.numel() > 0 && (index.min().item<int64_t>() < 0 || index.max().item<int64_t>() >= num_samples)) {
    throw Error("distillation: the teacher's pass gave sample indices outside [0, " + std::to_string(num_samples) + ")");
  }
  auto probs = torch::zeros({num_samples, p.logits.size(1)}, torch::kFloat);
  probs.index_copy_(0, index, torch::softmax(p.logits.to(torch::kFloat) / temperature, 1));
  const auto seen = torch::zeros({num_samples}, torch::kBool).index_fill_(0, index, true);
  if (!seen.all().item<bool>()) {
    throw Error("distillation: the teacher's pass missed " + std::to_string((~seen).sum().item<int64_t>()) +
                " of " + std::to_string(num_samples) + " training samples");
  }
  return probs;
}

TeacherSource::TeacherSource(BatchSource& inner, at::Tensor probs) : inner_(inner), probs_(std::move(probs)) {}

std::optional<Batch> TeacherSource::next() {
  auto batch = inner_.next();
  if (batch) batch->teacher = probs_.index_select(0, batch->indices.to(torch::kLong).cpu());
  return batch;
}

}  // namespace mmintent
