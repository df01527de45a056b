#include "mmintent/evaluation/out_of_scope.h"

#include "mmintent/error.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

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

TEST(OutOfScopeTest, ThresholdForALossRejectsTheFewestSureCorrectOnesItMay) {
  // Four in-scope classes (out-of-scope, index 4, is not one). Ten in-scope samples: correct
  // ones with top probabilities 0.3 .. 0.9 (0.5 twice), two wrong ones (0.35, 0.95); one
  // out-of-scope sample (0.4), which the choice does not need.
  const std::vector<std::pair<float, int64_t>> rows{{0.9f, 0}, {0.8f, 1}, {0.7f, 0}, {0.5f, 1}, {0.5f, 0},
                                                    {0.6f, 1}, {0.3f, 0}, {0.35f, 1}, {0.95f, 0}, {0.55f, 0},
                                                    {0.4f, 0}};
  const std::vector<int64_t> gold{0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 4};
  std::vector<float> flat;
  for (const auto& [top, arg] : rows) {
    for (int64_t k = 0; k < 4; ++k) flat.push_back(k == arg ? top : (1 - top) / 3);
  }
  const auto probs = torch::tensor(flat).reshape({11, 4});
  // No loss allowed: the lowest correct top probability (0.3) rejects no correct sample.
  EXPECT_FLOAT_EQ(choose_oos_threshold_for_loss(probs, gold, 4, 0.0), 0.3f);
  // 10 in-scope samples: 0.1 lets one correct one go (0.3); the next, 0.5, is tied twice, so a
  // threshold above it would cost two more: 0.1 and 0.2 stop at 0.5.
  EXPECT_FLOAT_EQ(choose_oos_threshold_for_loss(probs, gold, 4, 0.1), 0.5f);
  EXPECT_FLOAT_EQ(choose_oos_threshold_for_loss(probs, gold, 4, 0.2), 0.5f);
  EXPECT_FLOAT_EQ(choose_oos_threshold_for_loss(probs, gold, 4, 0.3), 0.55f);
  const auto before = oos_metrics(threshold_decisions(probs, 0.0, 4), gold, 4).in_scope_accuracy;
  EXPECT_DOUBLE_EQ(before, 0.8);
  for (double loss : {0.0, 0.1, 0.2, 0.3, 0.5}) {
    const double t = choose_oos_threshold_for_loss(probs, gold, 4, loss);
    const auto after = oos_metrics(threshold_decisions(probs, t, 4), gold, 4).in_scope_accuracy;
    EXPECT_LE(before - after, loss + 1e-9) << loss;
  }
  // The out-of-scope sample (0.4) is caught from 0.1 on.
  EXPECT_DOUBLE_EQ(oos_metrics(threshold_decisions(probs, 0.5, 4), gold, 4).oos_recall, 1.0);
  EXPECT_THROW(choose_oos_threshold_for_loss(probs, gold, 4, 1.0), Error);
  EXPECT_THROW(choose_oos_threshold_for_loss(probs.narrow(0, 10, 1), {4}, 4, 0.1), Error);
}

TEST(OutOfScopeTest, NoOutOfScopeSamplesKeepsThresholdZero) {
  auto probs = torch::tensor({{0.9f, 0.1f}, {0.2f, 0.8f}});
  EXPECT_DOUBLE_EQ(choose_oos_threshold(probs, {0, 1}, 2), 0.0);
}

// Any score (here unbounded, e.g. an energy), over classes predicted with a trained
// out-of-scope class 2: a sample already predicted out of scope stays so at any threshold.
//   score:     -5 -4 -3 -2 -1  0  1  2
//   gold:       2  0  2  1  0  0  1  2
//   predicted:  0  0  2  1  1  0  1  1
TEST(OutOfScopeTest, ScoreThresholdsOverAnyScaleAndATrainedClass) {
  const std::vector<double> scores{-5, -4, -3, -2, -1, 0, 1, 2};
  const std::vector<int64_t> gold{2, 0, 2, 1, 0, 0, 1, 2};
  const std::vector<int64_t> predicted{0, 0, 2, 1, 1, 0, 1, 1};
  // Right without a threshold: 5 of 8. Rejecting the -5 sample (out of scope, predicted 0)
  // makes 6; every further rejection costs a correct in-scope one or changes nothing, until the
  // last (out of scope) wins one back: 3. The best is halfway between -5 and -4.
  EXPECT_DOUBLE_EQ(choose_score_threshold(scores, predicted, gold, 2), -4.5);
  // Nothing to gain: the lowest score, which rejects nothing.
  EXPECT_DOUBLE_EQ(choose_score_threshold({3.5, 7}, {0, 1}, {0, 1}, 2), 3.5);
  // Best to reject everything: just above the highest score.
  EXPECT_GT(choose_score_threshold({3.5, 7}, {0, 1}, {2, 2}, 2), 7.0);
  EXPECT_LT(choose_score_threshold({3.5, 7}, {0, 1}, {2, 2}, 2), 7.0 + 1e-9);

  // In scope: 5 samples, the correct ones score -4, -2, 0, 1.
  EXPECT_DOUBLE_EQ(choose_score_threshold_for_loss(scores, predicted, gold, 2, 0.0), -4.0);   // none of them
  EXPECT_DOUBLE_EQ(choose_score_threshold_for_loss(scores, predicted, gold, 2, 0.2), -2.0);   // floor(1.0): one
  EXPECT_DOUBLE_EQ(choose_score_threshold_for_loss(scores, predicted, gold, 2, 0.39), -2.0);  // floor(1.95): one
  EXPECT_DOUBLE_EQ(choose_score_threshold_for_loss(scores, predicted, gold, 2, 0.4), 0.0);    // two
  const double all = choose_score_threshold_for_loss(scores, predicted, gold, 2, 0.8);        // all four
  EXPECT_GT(all, 2.0);
  EXPECT_LT(all, 2.0 + 1e-9);

  EXPECT_THROW(choose_score_threshold({1.0}, {0, 1}, {0, 1}, 2), Error);
  EXPECT_THROW(choose_score_threshold({}, {}, {}, 2), Error);
  EXPECT_THROW(choose_score_threshold_for_loss(scores, predicted, gold, 2, 1.0), Error);
  EXPECT_THROW(choose_score_threshold_for_loss({1.0}, {2}, {2}, 2, 0.1), Error);
}

}  // namespace

namespace {

TEST(OutOfScopeScoresTest, MaxProbAndEnergyReadTheInScopeColumnsOnly) {
  const auto logits = torch::tensor({{1.0, 2.0, 3.0}, {0.0, 0.0, 0.0}}, torch::kDouble);
  const auto probs = torch::softmax(logits, 1);
  // Out-of-scope not a class (index past the columns): every column.
  auto e = energy_scores(logits, 3);
  EXPECT_NEAR(e[0].item<double>(), std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)), 1e-12);
  EXPECT_NEAR(e[1].item<double>(), std::log(3.0), 1e-12);
  EXPECT_NEAR(energy_scores(logits, 3, 2.0)[1].item<double>(), 2.0 * std::log(3.0), 1e-12);
  // Column 2 the out-of-scope class: left out.
  e = energy_scores(logits, 2);
  EXPECT_NEAR(e[0].item<double>(), std::log(std::exp(1.0) + std::exp(2.0)), 1e-12);
  const auto m = max_prob_scores(probs, 2);
  EXPECT_NEAR(m[0].item<double>(), probs[0][1].item<double>(), 1e-12);
  EXPECT_NEAR(m[1].item<double>(), 1.0 / 3, 1e-12);
  EXPECT_NEAR(max_prob_scores(probs, 3)[0].item<double>(), probs[0][2].item<double>(), 1e-12);
  EXPECT_THROW(energy_scores(logits, 3, 0.0), Error);
}

TEST(OutOfScopeScoresTest, MahalanobisOnAHandMadeCase) {
  // Class 0 around (0, 0), class 1 around (4, 0), each (+-1, 0) and (0, +-1) off its mean: the
  // shared covariance is diag(0.5, 0.5), its inverse diag(2, 2). The out-of-scope sample (label
  // 2) far away must not move the fit.
  const auto f = torch::tensor({{-1.0, 0.0}, {1.0, 0.0}, {0.0, -1.0}, {0.0, 1.0},
                                {3.0, 0.0}, {5.0, 0.0}, {4.0, -1.0}, {4.0, 1.0}, {100.0, 100.0}}, torch::kDouble);
  const auto fit = fit_mahalanobis(f, {0, 0, 0, 0, 1, 1, 1, 1, 2}, 2);
  EXPECT_TRUE(torch::allclose(fit.means, torch::tensor({{0.0, 0.0}, {4.0, 0.0}}, torch::kDouble)));
  EXPECT_TRUE(torch::allclose(fit.precision, 2 * torch::eye(2, torch::kDouble), 1e-4, 1e-4)) << fit.precision;
  const auto s = mahalanobis_scores(fit, torch::tensor({{0.0, 0.0}, {2.0, 0.0}, {0.0, 3.0}, {4.5, 0.0}}, torch::kFloat));
  const std::vector<double> want{0.0, -8.0, -18.0, -0.5};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(s[i].item<double>(), want[static_cast<size_t>(i)], 1e-3) << i;
  EXPECT_THROW(fit_mahalanobis(f.narrow(0, 8, 1), {2}, 2), Error);  // nothing in scope
  EXPECT_THROW(mahalanobis_scores(fit, torch::zeros({1, 3})), Error);
}

TEST(OutOfScopeScoresTest, DetectionAurocAndFprAt95Tpr) {
  // In scope (labels 0, 1): 0.9 0.8 0.7 0.6; out of scope (label 2): 0.75 0.1.
  const auto scores = torch::tensor({0.9, 0.75, 0.8, 0.7, 0.1, 0.6});
  const std::vector<int64_t> gold{0, 2, 1, 0, 2, 1};
  const auto d = oos_detection(scores, gold, 2);
  EXPECT_EQ(d.in_scope, 4);
  EXPECT_EQ(d.oos, 2);
  EXPECT_NEAR(d.auroc, 6.0 / 8, 1e-12);  // 0.9, 0.8 beat both; 0.7, 0.6 beat 0.1 only
  // Keeping 95% of 4 in-scope samples keeps all four: threshold 0.6, and 0.75 passes it.
  EXPECT_NEAR(d.fpr_at_95_tpr, 0.5, 1e-12);
  // Ties count half; a perfect score.
  EXPECT_NEAR(oos_detection(torch::tensor({0.5, 0.5}), {0, 2}, 2).auroc, 0.5, 1e-12);
  const auto perfect = oos_detection(torch::tensor({0.9, 0.1, 0.8, 0.2}), {0, 2, 1, 2}, 2);
  EXPECT_EQ(perfect.auroc, 1.0);
  EXPECT_EQ(perfect.fpr_at_95_tpr, 0.0);
  EXPECT_THROW(oos_detection(torch::tensor({0.5, 0.4}), {0, 1}, 2), Error);
  EXPECT_THROW(oos_detection(torch::tensor({0.5}), {0, 1}, 2), Error);
}

}  // namespace
