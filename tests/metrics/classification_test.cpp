#include "mmintent/error.h"
#include "mmintent/metrics/classification.h"

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

namespace mmintent {
namespace {

TEST(MetricsFromConfusion, MatchesTheMetricsOfThePredictionsAndAddsUpOverShards) {
  torch::manual_seed(3);
  const int64_t n = 200, k = 6;
  const auto probs = torch::softmax(torch::randn({n, k}), 1);
  auto labels = torch::randint(0, k, {n}, torch::kLong);
  labels.index_put_({labels.eq(5)}, 4);  // class 5: predicted at times, never gold
  const auto whole = compute_metrics(probs, labels);
  // Two shards' confusion matrices summed, as a data-parallel run reduces them.
  auto a = compute_metrics(probs.slice(0, 0, 70), labels.slice(0, 0, 70)).confusion;
  const auto b = compute_metrics(probs.slice(0, 70), labels.slice(0, 70)).confusion;
  for (int64_t g = 0; g < k; ++g) {
    for (int64_t p = 0; p < k; ++p) a[g][p] += b[g][p];
  }
  const auto summed = metrics_from_confusion(a);
  EXPECT_EQ(summed.count, n);
  EXPECT_EQ(summed.confusion, whole.confusion);
  EXPECT_DOUBLE_EQ(summed.accuracy, whole.accuracy);
  EXPECT_DOUBLE_EQ(summed.macro_f1, whole.macro_f1);
  EXPECT_DOUBLE_EQ(summed.weighted_f1, whole.weighted_f1);
  EXPECT_DOUBLE_EQ(summed.macro_precision, whole.macro_precision);
  ASSERT_EQ(summed.per_class.size(), whole.per_class.size());
  for (int64_t c = 0; c < k; ++c) EXPECT_DOUBLE_EQ(summed.per_class[c].f1, whole.per_class[c].f1);
  EXPECT_THROW(metrics_from_confusion({{1, 2}, {3}}), Error);
}

}  // namespace
}  // namespace mmintent
