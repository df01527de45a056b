#include "mmintent/error.h"
#include "mmintent/training/loss.h"
#include "mmintent/training/optimization.h"
#include "support/support.h"

#include <torch/torch.h>

using namespace mmintent;

namespace {

TEST(LrScheduleTest, ConstantWithWarmup) {
  SchedulerOptions o;
  o.warmup_steps = 4;
  LrSchedule s(o, 1.0, 100);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.lr_at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(50), 1.0);
}

TEST(LrScheduleTest, StepDecay) {
  SchedulerOptions o;
  o.type = "step";
  o.step_size = 10;
  o.gamma = 0.5;
  LrSchedule s(o, 2.0, 100);
  EXPECT_DOUBLE_EQ(s.lr_at(9), 2.0);
  EXPECT_DOUBLE_EQ(s.lr_at(10), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(25), 0.5);
}

TEST(LrScheduleTest, CosineFromPeakToFloor) {
  SchedulerOptions o;
  o.type = "cosine";
  o.warmup_steps = 10;
  o.min_lr = 0.1;
  LrSchedule s(o, 1.0, 111);  // 10 warm-up steps, then 101 steps of decay: 0..100
  EXPECT_DOUBLE_EQ(s.lr_at(10), 1.0);
  EXPECT_NEAR(s.lr_at(60), 0.55, 1e-12);  // half way: the mean of peak and floor
  EXPECT_NEAR(s.lr_at(110), 0.1, 1e-12);
  EXPECT_LT(s.lr_at(80), s.lr_at(70));
}

TEST(LrScheduleTest, AppliesToEveryParamGroup) {
  auto w = torch::zeros({2}, torch::requires_grad());
  OptimizerOptions oo;
  oo.type = "sgd";
  oo.lr = 0.5;
  auto opt = make_optimizer({w}, oo);
  SchedulerOptions so;
  so.warmup_steps = 2;
  LrSchedule(so, 0.5, 10).apply(*opt, 0);
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].options().get_lr(), 0.25);
}

TEST(OptimizerTest, SgdMomentumMatchesHandComputation) {
  auto w = torch::tensor({1.0f}, torch::requires_grad());
  OptimizerOptions oo;
  oo.type = "sgd";
  oo.lr = 0.1;
  oo.momentum = 0.9;
  oo.weight_decay = 0;
  auto opt = make_optimizer({w}, oo);
  for (int i = 0; i < 2; ++i) {
    opt->zero_grad();
    (w * 2).sum().backward();  // gradient 2
    opt->step();
  }
  // v1 = 2, w = 1 - 0.2 = 0.8; v2 = 0.9 * 2 + 2 = 3.8, w = 0.8 - 0.38 = 0.42
  EXPECT_NEAR(w.item<float>(), 0.42f, 1e-6);
}

TEST(OptimizerTest, RejectsUnknownType) {
  OptimizerOptions oo;
  oo.type = "adagrad";
  EXPECT_THROW(make_optimizer({torch::zeros({1}, torch::requires_grad())}, oo), Error);
}

TEST(LossTest, ClassWeightsAndSmoothing) {
  auto logits = torch::tensor({{2.0f, 0.0f}, {0.0f, 1.0f}});
  auto labels = torch::tensor({0L, 1L});
  LossOptions plain;
  auto base = per_sample_loss(logits, labels, plain);
  EXPECT_NEAR(base[0].item<float>(), std::log(1 + std::exp(-2.0f)), 1e-5);
  LossOptions weighted;
  weighted.class_weights = {1.0, 3.0};
  auto w = per_sample_loss(logits, labels, weighted);
  EXPECT_NEAR(w[1].item<float>(), 3 * base[1].item<float>(), 1e-5);
  LossOptions smooth;
  smooth.label_smoothing = 0.2;
  auto s = per_sample_loss(logits, labels, smooth);
  // Target 0.9/0.1 for sample 0: -(0.9 log p0 + 0.1 log p1).
  const float lp0 = -std::log(1 + std::exp(-2.0f)), lp1 = -2.0f + lp0;
  EXPECT_NEAR(s[0].item<float>(), -(0.9f * lp0 + 0.1f * lp1), 1e-5);
  weighted.class_weights = {1.0};
  EXPECT_THROW(per_sample_loss(logits, labels, weighted), Error);
}

}  // namespace
