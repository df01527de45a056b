#include "mmintent/training/loss.h"

#include "mmintent/error.h"

#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

namespace mmintent {

at::Tensor per_sample_loss(const at::Tensor& logits, const at::Tensor& labels,
                           const LossOptions& options) {
  namespace F = torch::nn::functional;
  if (options.label_smoothing < 0 || options.label_smoothing >= 1) {
    throw Error("loss.label_smoothing must be in [0, 1)");
  }
  auto loss = F::cross_entropy(logits, labels,
                               F::CrossEntropyFuncOptions()
                                   .reduction(torch::kNone)
                                   .label_smoothing(options.label_smoothing));
  if (!options.class_weights.empty()) {
    if (static_cast<int64_t>(options.class_weights.size()) != logits.size(1)) {
      throw Error("loss.class_weights has " + std::to_string(options.class_weights.size()) +
                  " entries, but there are " + std::to_string(logits.size(1)) + " classes");
    }
    auto w = torch::tensor(options.class_weights, logits.options().dtype(torch::kFloat));
    loss = loss * w.index_select(0, labels).to(loss.scalar_type());
  }
  return loss;
}

}  // namespace mmintent
