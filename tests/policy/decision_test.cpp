#include "mmintent/policy/decision.h"

#include "mmintent/error.h"
#include "mmintent/evaluation/plots.h"
#include "mmintent/evaluation/report.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <cmath>
#include <filesystem>
#include <vector>

using namespace mmintent;

namespace {

TEST(DecisionTest, TheThreeDecisionsOnScriptedProbabilities) {
  const DecisionThresholds t{0.5, 0.2};
  // Confident and clear: accept class 1.
  const double clear[] = {0.1, 0.8, 0.1};
  auto r = decide(clear, 3, false, -1, t);
  EXPECT_EQ(r.decision, Decision::accept);
  EXPECT_EQ(r.first, 1);
  EXPECT_EQ(r.second, 0);  // first index among the tied runners-up
  EXPECT_DOUBLE_EQ(r.top, 0.8);
  EXPECT_NEAR(r.margin, 0.7, 1e-12);
  // Confident but close: clarify between 2 and 0.
  const double close[] = {0.38, 0.02, 0.55, 0.05};
  r = decide(close, 4, false, -1, t);
  EXPECT_EQ(r.decision, Decision::clarify);
  EXPECT_EQ(r.first, 2);
  EXPECT_EQ(r.second, 0);
  EXPECT_NEAR(r.margin, 0.17, 1e-12);
  // Not confident: fallback, even though the margin is wide.
  const double low[] = {0.45, 0.05, 0.05, 0.05, 0.4};
  EXPECT_EQ(decide(low, 5, false, -1, DecisionThresholds{0.5, 0.0}).decision, Decision::fallback);
  // Out of scope: fallback whatever the probabilities.
  EXPECT_EQ(decide(clear, 3, true, -1, t).decision, Decision::fallback);
  // Exactly at the thresholds counts as passing them (>=).
  const double edge[] = {0.5, 0.25, 0.25};
  EXPECT_EQ(decide(edge, 3, false, -1, DecisionThresholds{0.5, 0.25}).decision, Decision::accept);
  // Zero thresholds: always accept what is in scope.
  EXPECT_EQ(decide(close, 4, false, -1, DecisionThresholds{}).decision, Decision::accept);
  EXPECT_EQ(to_string(Decision::clarify), "clarify");
  EXPECT_EQ(to_string(Decision::fallback), "fallback");
  EXPECT_EQ(to_string(Decision::accept), "accept");
}

TEST(DecisionTest, TheOutOfScopeClassIsNeverACandidate) {
  // Class 3 is the out-of-scope class: the candidates are 0 and 2, margin 0.3 - 0.25.
  const double p[] = {0.3, 0.05, 0.25, 0.4};
  const auto r =
      decide(p, 4, /*out_of_scope=*/false, /*oos_class=*/3, DecisionThresholds{0.0, 0.1});
  EXPECT_EQ(r.first, 0);
  EXPECT_EQ(r.second, 2);
  EXPECT_NEAR(r.margin, 0.05, 1e-12);
  EXPECT_DOUBLE_EQ(r.top, 0.4);
  EXPECT_EQ(r.decision, Decision::clarify);
}

/// A sample with the given top probability, margin and correctness.
DecisionSample s(double top, double margin, bool first, bool top2, bool oos = false) {
  DecisionSample x;
  x.top = top;
  x.margin = margin;
  x.first_correct = first;
  x.top2_correct = top2;
  x.out_of_scope = oos;
  return x;
}

TEST(DecisionTest, MinConfidenceChosenForTheTargetTopTwoPrecision) {
  // Sorted by top: 0.9 (top2 right), 0.8 (right), 0.7 (wrong), 0.6 (right), 0.5 (wrong),
  // and an out-of-scope sample that does not count.
  const std::vector<DecisionSample> val{
      s(0.9, 0.8, true, true),  s(0.8, 0.6, true, true),   s(0.7, 0.1, false, false),
      s(0.6, 0.1, false, true), s(0.5, 0.2, false, false), s(0.99, 0.9, false, false, true)};
  DecisionOptions o;
  o.min_confidence = -1;
  o.clarify_margin = 0.0;
  o.target_precision = 0.75;
  // Prefix precisions: 1, 1, 2/3, 3/4, 3/5: the largest prefix reaching 0.75 keeps 4, so the
  // threshold lies between 0.6 and 0.5.
  auto c = choose_decision_thresholds(val, o);
  EXPECT_TRUE(c.min_confidence_chosen);
  EXPECT_TRUE(c.min_confidence_reached);
  EXPECT_FALSE(c.clarify_margin_chosen);
  EXPECT_NEAR(c.thresholds.min_confidence, 0.55, 1e-12);
  EXPECT_DOUBLE_EQ(c.thresholds.clarify_margin, 0.0);
  // A target every prefix meets keeps everything: threshold 0.
  o.target_precision = 0.5;
  EXPECT_DOUBLE_EQ(choose_decision_thresholds(val, o).thresholds.min_confidence, 0.0);
  // An unreachable target: the best precision (1.0, the first two) and reached = false.
  o.target_precision = 1.01;
  c = choose_decision_thresholds(val, o);
  EXPECT_FALSE(c.min_confidence_reached);
  EXPECT_NEAR(c.thresholds.min_confidence, 0.75, 1e-12);
}

TEST(DecisionTest, ClarifyMarginChosenForTheTargetAcceptedPrecision) {
  // Margins: 0.8 right, 0.6 right, 0.4 wrong, 0.3 right, 0.2 wrong, 0.1 wrong; one sample
  // under min_confidence 0.3 is left out.
  const std::vector<DecisionSample> val{s(0.9, 0.8, true, true),  s(0.8, 0.6, true, true),
                                        s(0.6, 0.4, false, true), s(0.6, 0.3, true, true),
                                        s(0.5, 0.2, false, true), s(0.4, 0.1, false, false),
                                        s(0.2, 0.15, true, true)};
  DecisionOptions o;
  o.min_confidence = 0.3;
  o.clarify_margin = -1;
  o.target_precision = 0.9;
  // Prefix precisions by margin: 1, 1, 2/3, 3/4, 3/5, 1/2: keep 2 -> between 0.6 and 0.4.
  auto c = choose_decision_thresholds(val, o);
  EXPECT_NEAR(c.thresholds.clarify_margin, 0.5, 1e-12);
  EXPECT_TRUE(c.clarify_margin_reached);
  const auto st = decision_stats(val, c.thresholds);
  EXPECT_EQ(st.accepted, 2);
  EXPECT_EQ(st.clarified, 4);
  EXPECT_EQ(st.fallbacks, 1);
  EXPECT_DOUBLE_EQ(st.accepted_accuracy, 1.0);
  EXPECT_DOUBLE_EQ(st.clarify_top2_accuracy, 3.0 / 4);
  EXPECT_NEAR(st.accept_share + st.clarify_share + st.fallback_share, 1.0, 1e-12);
  // Precision 0.75 on val: keep 4 -> between 0.3 and 0.2; accepted precision then >= 0.75.
  o.target_precision = 0.75;
  c = choose_decision_thresholds(val, o);
  EXPECT_NEAR(c.thresholds.clarify_margin, 0.25, 1e-12);
  EXPECT_GE(decision_stats(val, c.thresholds).accepted_accuracy, 0.75);
}

TEST(DecisionTest, BothChosenAndTiesMoveTogether) {
  // Two samples tie at top 0.7 (one right, one wrong): they stay or go together.
  const std::vector<DecisionSample> val{s(0.9, 0.9, true, true), s(0.7, 0.5, true, true),
                                        s(0.7, 0.5, false, false), s(0.3, 0.1, false, false)};
  DecisionOptions o;
  o.min_confidence = -1;
  o.clarify_margin = -1;
  o.target_precision = 0.7;
  const auto c = choose_decision_thresholds(val, o);
  // Top-two precision of the prefixes {0.9}: 1, {0.9, 0.7, 0.7}: 2/3, all: 1/2 -> keep 1.
  EXPECT_NEAR(c.thresholds.min_confidence, 0.8, 1e-12);
  EXPECT_NEAR(c.thresholds.clarify_margin, 0.0, 1e-12);  // the one kept sample is right
  EXPECT_TRUE(c.min_confidence_chosen && c.clarify_margin_chosen);
  // No samples at all: thresholds 0.
  const auto empty = choose_decision_thresholds({}, o);
  EXPECT_DOUBLE_EQ(empty.thresholds.min_confidence, 0.0);
  EXPECT_DOUBLE_EQ(empty.thresholds.clarify_margin, 0.0);
}

TEST(DecisionTest, CoverageCurve) {
  const std::vector<DecisionSample> val{s(0.9, 0.8, true, true), s(0.6, 0.4, false, true),
                                        s(0.6, 0.3, true, true), s(0.4, 0.1, false, false),
                                        s(0.95, 0.9, true, true, /*oos=*/true)};
  const auto curve = coverage_curve(val);
  ASSERT_EQ(curve.size(), 3u);
  EXPECT_DOUBLE_EQ(curve[0].threshold, 0.4);
  EXPECT_DOUBLE_EQ(curve[0].coverage, 4.0 / 5);  // the out-of-scope sample is never accepted
  EXPECT_DOUBLE_EQ(curve[0].accuracy, 2.0 / 4);
  EXPECT_DOUBLE_EQ(curve[1].threshold, 0.6);
  EXPECT_DOUBLE_EQ(curve[1].coverage, 3.0 / 5);
  EXPECT_DOUBLE_EQ(curve[1].accuracy, 2.0 / 3);
  EXPECT_DOUBLE_EQ(curve[2].coverage, 1.0 / 5);
  EXPECT_DOUBLE_EQ(curve[2].accuracy, 1.0);
  EXPECT_TRUE(coverage_curve({s(0.9, 0.9, true, true, true)}).empty());
}

}  // namespace

namespace {

TEST(DecisionTest, DecisionSamplesOfProbabilityRows) {
  // 3 classes, class 2 is the out-of-scope class.
  const std::vector<double> probs{0.7,  0.2,  0.1,   // right, accepted-looking
                                  0.3,  0.5,  0.2,   // wrong first, gold second
                                  0.1,  0.2,  0.7,   // arg-max is the out-of-scope class
                                  0.45, 0.15, 0.4};  // gold is out-of-scope: never correct
  auto s = decision_samples(probs, 3, {0, 0, 2, 2}, /*oos_class=*/2, /*oos_threshold=*/-1);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_TRUE(s[0].first_correct);
  EXPECT_NEAR(s[0].margin, 0.5, 1e-12);
  EXPECT_FALSE(s[1].first_correct);
  EXPECT_TRUE(s[1].top2_correct);
  EXPECT_TRUE(s[2].out_of_scope);
  EXPECT_FALSE(s[3].out_of_scope);
  EXPECT_FALSE(s[3].first_correct);
  EXPECT_FALSE(s[3].top2_correct);
  EXPECT_NEAR(s[3].margin, 0.3, 1e-12);  // between classes 0 and 1; class 2 is no candidate
  // Threshold method: no out-of-scope class; a top probability under 0.6 is out of scope, and
  // gold label 3 (one past the classes) is an out-of-scope sample.
  s = decision_samples(probs, 3, {0, 1, 2, 3}, -1, 0.6);
  EXPECT_FALSE(s[0].out_of_scope);
  EXPECT_TRUE(s[1].out_of_scope);
  EXPECT_FALSE(s[2].out_of_scope);
  EXPECT_TRUE(s[2].first_correct);
  EXPECT_TRUE(s[3].out_of_scope);
  EXPECT_FALSE(s[3].top2_correct);
  EXPECT_THROW(decision_samples(probs, 3, {0, 1}, -1, -1), std::exception);
  // Method both: the out-of-scope class, and rejections given per row (any score's threshold).
  s = decision_samples(probs, 3, {0, 0, 2, 0}, 2, std::vector<bool>{false, true, false, true});
  EXPECT_FALSE(s[0].out_of_scope);
  EXPECT_TRUE(s[0].first_correct);
  EXPECT_TRUE(s[1].out_of_scope);
  EXPECT_TRUE(s[1].top2_correct);  // the candidates stay what they were
  EXPECT_TRUE(s[2].out_of_scope);  // its arg-max is the out-of-scope class
  EXPECT_TRUE(s[3].out_of_scope);
  EXPECT_TRUE(s[3].first_correct);
  EXPECT_THROW(decision_samples(probs, 3, {0, 0, 2, 0}, 2, std::vector<bool>{false}), std::exception);
}

TEST(DecisionTest, DecisionReportAndCoveragePlot) {
  test::TempDir dir;
  const std::vector<DecisionSample> val{s(0.9, 0.8, true, true), s(0.6, 0.4, false, true),
                                        s(0.6, 0.3, true, true), s(0.4, 0.1, false, false)};
  DecisionReport r;
  r.options.min_confidence = -1;
  r.options.target_precision = 0.8;
  r.thresholds = {0.5, 0.35};
  r.stats = decision_stats(val, r.thresholds);
  r.curve = coverage_curve(val);
  write_decision_report(dir.str(), "val", r);
  const auto j = nlohmann::json::parse(
      test::read_file((dir.path() / "report.json").string()))["val"]["decision"];
  EXPECT_DOUBLE_EQ(j["min_confidence"].get<double>(), 0.5);
  EXPECT_TRUE(j["chosen_on_val"]["min_confidence"].get<bool>());
  EXPECT_FALSE(j["chosen_on_val"]["clarify_margin"].get<bool>());
  EXPECT_EQ(j["accepted"], 2);   // margins 0.8 and 0.4
  EXPECT_EQ(j["clarified"], 1);  // margin 0.3
  EXPECT_EQ(j["fallbacks"], 1);  // top 0.4
  EXPECT_DOUBLE_EQ(j["accepted_accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["accept"].get<double>(), 0.5);
  EXPECT_FALSE(cv::imread((dir.path() / "coverage_val.png").string()).empty());
  CoverageCurvePlot bad;
  bad.coverage = {1.0};
  EXPECT_THROW(draw_coverage_curve(bad, "t", (dir.path() / "x.png").string()), Error);
  // An empty curve still draws (a note instead of a line).
  EXPECT_NO_THROW(
      draw_coverage_curve(CoverageCurvePlot{}, "t", (dir.path() / "empty.png").string()));
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "empty.png"));
}

TEST(DecisionTest, RewriteReportListsChanges) {
  test::TempDir dir;
  RewriteCheck c;
  c.count = 4;
  c.unchanged = 3;
  c.normalised_differs = 2;
  c.changes.push_back({"um book it", "book it", "book_flight", "book_hotel"});
  write_rewrite_report(dir.str(), "test", c);
  const auto j = nlohmann::json::parse(
      test::read_file((dir.path() / "report.json").string()))["test"]["rewrite"];
  EXPECT_DOUBLE_EQ(j["intent_unchanged_rate"].get<double>(), 0.75);
  EXPECT_EQ(j["normalised_differs"], 2);
  ASSERT_EQ(j["changed"].size(), 1u);
  EXPECT_EQ(j["changed"][0]["after"], "book_hotel");
}

}  // namespace

namespace {

TEST(ExploreTest, WithoutExplorationTheGreedyIntentIsShownWithPropensityOne) {
  for (uint64_t r : {0ull, 1ull, 0xffffffffffffffffull, 123456789ull}) {
    const auto s = choose_shown(2, 5, 0.0, r);
    EXPECT_EQ(s.intent, 2);
    EXPECT_DOUBLE_EQ(s.propensity, 1.0);
  }
}

TEST(ExploreTest, ShownIntentsFollowTheirPropensities) {
  // epsilon 0.2 over 4 intents, greedy 1: P(1) = 0.8 + 0.05, others 0.05 each.
  const int64_t K = 4, greedy = 1;
  const double eps = 0.2;
  std::vector<int64_t> counts(K, 0);
  const int n = 200000;
  uint64_t x = 42;
  for (int i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;  // any well-spread sequence
    const auto s = choose_shown(greedy, K, eps, x);
    ASSERT_GE(s.intent, 0);
    ASSERT_LT(s.intent, K);
    // The logged propensity is the policy's probability of what it showed: never 0 or 1.
    ASSERT_DOUBLE_EQ(s.propensity, shown_propensity(s.intent, greedy, K, eps));
    ASSERT_GT(s.propensity, 0);
    ASSERT_LT(s.propensity, 1);
    ++counts[s.intent];
  }
  for (int64_t k = 0; k < K; ++k) {
    const double p = shown_propensity(k, greedy, K, eps);
    const double sd = std::sqrt(p * (1 - p) / n);
    EXPECT_NEAR(static_cast<double>(counts[k]) / n, p, 5 * sd) << "intent " << k;
  }
  EXPECT_DOUBLE_EQ(shown_propensity(1, 1, 4, 0.2), 0.85);
  EXPECT_DOUBLE_EQ(shown_propensity(0, 1, 4, 0.2), 0.05);
  // The same bits, the same choice.
  EXPECT_EQ(choose_shown(1, 4, 0.2, 987654321).intent, choose_shown(1, 4, 0.2, 987654321).intent);
}

TEST(ExploreTest, BadArgumentsAreErrors) {
  EXPECT_THROW(choose_shown(0, 0, 0.1, 1), Error);
  EXPECT_THROW(choose_shown(4, 4, 0.1, 1), Error);
  EXPECT_THROW(choose_shown(0, 4, 1.5, 1), Error);
}

}  // namespace
