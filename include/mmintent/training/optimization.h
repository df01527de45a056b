#pragma once
/// Optimizers (AdamW, SGD with momentum) and learning-rate schedules (constant, step, cosine,
/// each with linear warm-up), stepped once per optimizer step.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace torch::optim {
class Optimizer;
}

namespace mmintent {

struct OptimizerOptions {
  std::string type = "adamw";  ///< "adamw" or "sgd"
  double lr = 1e-3;
  double weight_decay = 0.01;
  double momentum = 0.9;  ///< sgd only
  bool nesterov = false;  ///< sgd only
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  ///< adamw only
};

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params,
                                                        const OptimizerOptions& options);

struct SchedulerOptions {
  std::string type = "constant";  ///< "constant", "step" or "cosine"
  int64_t warmup_steps = 0;       ///< linear warm-up from lr/warmup_steps to lr
  int64_t step_size = 1000;       ///< step: multiply by gamma every step_size steps
  double gamma = 0.1;
  double min_lr = 0.0;            ///< cosine: the floor reached at the last step
};

/// The learning rate as a pure function of the optimizer step, so a resumed run needs only the
/// step count to continue the schedule exactly.
class LrSchedule {
 public:
  LrSchedule(SchedulerOptions options, double base_lr, int64_t total_steps);
  /// Learning rate for optimizer step `step` (0-based).
  double lr_at(int64_t step) const;
  /// Sets the rate of every parameter group of `optimizer` for step `step`.
  void apply(torch::optim::Optimizer& optimizer, int64_t step) const;

 private:
  SchedulerOptions options_;
  double base_lr_;
  int64_t total_steps_;
};

}  // namespace mmintent
