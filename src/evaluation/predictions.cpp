#include "mmintent/evaluation/predictions.h"

#include <torch/torch.h>

namespace mmintent {

Predictions collect_predictions(IntentClassifier& model, BatchSource& source,
                                const c10::Device& device, int64_t epoch) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  std::vector<torch::Tensor> probs, labels, indices;
  double loss_sum = 0;
  int64_t n = 0;
  source.start_epoch(epoch);
  while (auto batch = source.next()) {
    auto b = batch->to(device, /*non_blocking=*/true);
    auto logits = model->forward(b);
    if (b.labels.defined()) {
      loss_sum += torch::nn::functional::cross_entropy(
                      logits, b.labels,
                      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                      .item<double>();
      labels.push_back(b.labels.to(torch::kCPU));
    }
    probs.push_back(torch::softmax(logits, 1).to(torch::kCPU, torch::kFloat));
    indices.push_back(batch->indices);
    n += batch->size();
  }
  model->train(was_training);
  Predictions p;
  if (!probs.empty()) {
    p.probs = torch::cat(probs);
    p.indices = torch::cat(indices);
    if (!labels.empty()) p.labels = torch::cat(labels);
  }
  p.loss = n ? loss_sum / n : 0.0;
  return p;
}

}  // namespace mmintent
