#include "mmintent/training/predictions.h"

#include <torch/torch.h>

namespace mmintent {

Predictions collect_predictions(IntentClassifier& model, BatchSource& source,
                                const c10::Device& device, Precision precision, int64_t epoch,
                                bool with_features) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  std::vector<torch::Tensor> logits_all, features, labels, indices;
  double loss_sum = 0;
  int64_t n_loss = 0;
  source.start_epoch(epoch);
  while (auto batch = source.next()) {
    if (batch->size() == 0) continue;  // this rank's empty part of a sharded last batch
    auto b = batch->to(device, /*non_blocking=*/true);
    at::Tensor logits;
    {
      AutocastGuard autocast(device, precision);
      if (with_features) {
        auto [l, f] = model->forward_with_features(b);
        logits = l;
        features.push_back(f.to(torch::kCPU, torch::kFloat));
      } else {
        logits = model->forward(b);
      }
    }
    logits = logits.to(torch::kFloat);
    if (b.labels.defined()) {
      // Labels past the model's classes (out-of-scope samples that are not a trained class)
      // and label-less samples (-1: a rejection in a feedback log) have no loss.
      const auto known = b.labels.lt(logits.size(1)).logical_and(b.labels.ge(0));
      const auto n_known = known.sum().item<int64_t>();
      if (n_known > 0) {
        loss_sum += torch::nn::functional::cross_entropy(
                        logits.index({known}), b.labels.index({known}),
                        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                        .item<double>();
      }
      n_loss += n_known;
      labels.push_back(b.labels.to(torch::kCPU));
    }
    logits_all.push_back(logits.to(torch::kCPU));
    indices.push_back(batch->indices);
  }
  model->train(was_training);
  Predictions p;
  if (!logits_all.empty()) {
    p.logits = torch::cat(logits_all);
    p.probs = torch::softmax(p.logits, 1);
    if (with_features) p.features = torch::cat(features);
    p.indices = torch::cat(indices);
    if (!labels.empty()) p.labels = torch::cat(labels);
  }
  p.loss = n_loss ? loss_sum / n_loss : 0.0;
  p.loss_sum = loss_sum;
  p.loss_samples = n_loss;
  return p;
}

}  // namespace mmintent
