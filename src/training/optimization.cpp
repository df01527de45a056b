#include "mmintent/training/optimization.h"

#include "mmintent/error.h"

#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <cmath>

namespace mmintent {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params,
                                                        const OptimizerOptions& o) {
  if (!(o.lr > 0)) throw Error("optimizer.lr must be > 0");
  if (o.type == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(o.lr)
                    .weight_decay(o.weight_decay)
                    .betas(std::make_tuple(o.beta1, o.beta2))
                    .eps(o.eps));
  }
  if (o.type == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(o.lr)
                    .momentum(o.momentum)
                    .nesterov(o.nesterov)
                    .weight_decay(o.weight_decay));
  }
  throw Error("optimizer.type must be adamw or sgd, got '" + o.type + "'");
}

LrSchedule::LrSchedule(SchedulerOptions options, double base_lr, int64_t total_steps)
    : options_(std::move(options)), base_lr_(base_lr), total_steps_(std::max<int64_t>(1, total_steps)) {
  if (options_.type != "constant" && options_.type != "step" && options_.type != "cosine") {
    throw Error("scheduler.type must be constant, step or cosine, got '" + options_.type + "'");
  }
  if (options_.warmup_steps < 0 || options_.step_size < 1) {
    throw Error("scheduler: warmup_steps must be >= 0 and step_size >= 1");
  }
}

double LrSchedule::lr_at(int64_t step) const {
  const int64_t warm = options_.warmup_steps;
  if (step < warm) return base_lr_ * static_cast<double>(step + 1) / static_cast<double>(warm);
  const int64_t s = step - warm;
  if (options_.type == "step") return base_lr_ * std::pow(options_.gamma, s / options_.step_size);
  if (options_.type == "cosine") {
    const int64_t span = std::max<int64_t>(1, total_steps_ - warm - 1);
    const double progress = std::min(1.0, static_cast<double>(s) / static_cast<double>(span));
    return options_.min_lr + (base_lr_ - options_.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  return base_lr_;
}

void LrSchedule::apply(torch::optim::Optimizer& optimizer, int64_t step) const {
  const double lr = lr_at(step);
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace mmintent
