#include "mmintent/evaluation/out_of_scope.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

using namespace mmintent;

namespace {

// Classes 0, 1 are in scope; 2 marks out-of-scope.
// gold:      0 0 1 1 2 2 2 2
// predicted: 0 2 1 0 2 2 1 0
TEST(OutOfScopeTest, MetricsAsLarsonDefinesThem) {
  auto m = oos_metrics({0, 2, 1, 0, 2, 2, 1, 0}, {0, 0, 1, 1, 2, 2, 2, 2}, 2);
  EXPECT_EQ(m.in_scope_count, 4);
  EXPECT_EQ(m.oos_count, 4);
  EXPECT_DOUBLE_EQ(m.in_scope_accuracy, 2.0 / 4);  // a rejected in-scope sample is wrong
  EXPECT_DOUBLE_EQ(m.oos_recall, 2.0 / 4);
  EXPECT_DOUBLE_EQ(m.oos_precision, 2.0 / 3);      // 3 predicted out-of-scope, 2 of them are
  EXPECT_NEAR(m.oos_f1, 2 * 0.5 * (2.0 / 3) / (0.5 + 2.0 / 3), 1e-12);
  EXPECT_DOUBLE_EQ(m.accuracy, 4.0 / 8);
}

TEST(OutOfScopeTest, NothingPredictedOutOfScope) {
  auto m = oos_metrics({0, 1, 0}, {0, 1, 2}, 2);
  EXPECT_DOUBLE_EQ(m.oos_recall, 0.0);
  EXPECT_DOUBLE_EQ(m.oos_precision, 0.0);
  EXPECT_DOUBLE_EQ(m.in_scope_accuracy, 1.0);
}

TEST(OutOfScopeTest, ThresholdDecisions) {
  auto probs = torch::tensor({{0.9f, 0.1f}, {0.55f, 0.45f}, {0.3f, 0.7f}});
  EXPECT_EQ(threshold_decisions(probs, 0.6, 2), (std::vector<int64_t>{0, 2, 1}));
  EXPECT_EQ(threshold_decisions(probs, 0.0, 2), (std::vector<int64_t>{0, 0, 1}));
}

TEST(OutOfScopeTest, ChosenThresholdMaximisesValidationAccuracy) {
  // Top probabilities: in-scope correct 0.9, 0.8, 0.6; in-scope wrong 0.5; OOS 0.58, 0.55.
  auto probs = torch::tensor({{0.9f, 0.1f}, {0.2f, 0.8f}, {0.6f, 0.4f}, {0.5f, 0.5f},
                              {0.42f, 0.58f}, {0.45f, 0.55f}});
  std::vector<int64_t> gold{0, 1, 0, 1, 2, 2};
  // Sample 3 ties at 0.5: arg-max 0 (first), gold 1, so it is wrong whatever happens.
  const double t = choose_oos_threshold(probs, gold, 2);
  // Rejecting everything under 0.6 keeps the three correct ones and catches both OOS: 5/6.
  EXPECT_GT(t, 0.58);
  EXPECT_LE(t, 0.6);
  auto m = oos_metrics(threshold_decisions(probs, t, 2), gold, 2);
  EXPECT_DOUBLE_EQ(m.accuracy, 5.0 / 6);
  EXPECT_DOUBLE_EQ(m.oos_recall, 1.0);
}

TEST(OutOfScopeTest, NoOutOfScopeSamplesKeepsThresholdZero) {
  auto probs = torch::tensor({{0.9f, 0.1f}, {0.2f, 0.8f}});
  EXPECT_DOUBLE_EQ(choose_oos_threshold(probs, {0, 1}, 2), 0.0);
}

}  // namespace
