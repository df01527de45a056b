#include "mmintent/evaluation/metrics.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

using mmintent::compute_metrics;

namespace {

// gold:      0 0 0 1 1 2
// predicted: 0 0 1 1 2 2
TEST(MetricsTest, HandComputedClassificationMetrics) {
  auto m = compute_metrics(std::vector<int64_t>{0, 0, 1, 1, 2, 2},
                           std::vector<int64_t>{0, 0, 0, 1, 1, 2}, 3);
  EXPECT_EQ(m.count, 6);
  EXPECT_DOUBLE_EQ(m.accuracy, 4.0 / 6);
  // class 0: p=2/2 r=2/3 f1=0.8; class 1: p=1/2 r=1/2 f1=0.5; class 2: p=1/2 r=1/1 f1=2/3
  EXPECT_DOUBLE_EQ(m.per_class[0].precision, 1.0);
  EXPECT_DOUBLE_EQ(m.per_class[0].recall, 2.0 / 3);
  EXPECT_NEAR(m.per_class[0].f1, 0.8, 1e-12);
  EXPECT_NEAR(m.per_class[1].f1, 0.5, 1e-12);
  EXPECT_NEAR(m.per_class[2].f1, 2.0 / 3, 1e-12);
  EXPECT_EQ(m.per_class[0].support, 3);
  EXPECT_NEAR(m.macro_f1, (0.8 + 0.5 + 2.0 / 3) / 3, 1e-12);
  EXPECT_NEAR(m.weighted_f1, (0.8 * 3 + 0.5 * 2 + 2.0 / 3 * 1) / 6, 1e-12);
  EXPECT_EQ(m.confusion[0][1], 1);
  EXPECT_EQ(m.confusion[1][2], 1);
  EXPECT_EQ(m.confusion[2][2], 1);
}

TEST(MetricsTest, AbsentClassesDoNotCountInMacroAverages) {
  auto m = compute_metrics(std::vector<int64_t>{0, 1}, std::vector<int64_t>{0, 1}, 4);
  EXPECT_DOUBLE_EQ(m.macro_f1, 1.0);
}

TEST(MetricsTest, TopKFromProbabilities) {
  auto probs = torch::tensor({{0.5f, 0.3f, 0.2f}, {0.1f, 0.2f, 0.7f}, {0.35f, 0.4f, 0.25f}});
  auto labels = torch::tensor({0L, 1L, 0L});
  auto m = compute_metrics(probs, labels, {1, 2, 5});
  EXPECT_DOUBLE_EQ(m.accuracy, 1.0 / 3);
  EXPECT_DOUBLE_EQ(m.top_k.at(1), 1.0 / 3);
  EXPECT_DOUBLE_EQ(m.top_k.at(2), 1.0);  // label 1 is second for sample 1, label 0 second for sample 2
  EXPECT_DOUBLE_EQ(m.top_k.at(5), 1.0);  // k larger than the classes means all
}

}  // namespace
