#include "mmintent/error.h"
#include "mmintent/training/early_stopping.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

using mmintent::EarlyStopping;
using mmintent::EarlyStoppingOptions;

namespace {

/// Feeds a scripted metric sequence; returns the 0-based epoch after which training stops
/// (or -1), and the best epoch.
std::pair<int, int64_t> run(const EarlyStoppingOptions& o, const std::vector<double>& values) {
  EarlyStopping es(o);
  for (size_t e = 0; e < values.size(); ++e) {
    es.update(static_cast<int64_t>(e), values[e]);
    if (es.should_stop(static_cast<int64_t>(e))) return {static_cast<int>(e), es.state().best_epoch};
  }
  return {-1, es.state().best_epoch};
}

TEST(EarlyStoppingTest, MinModeStopsAfterPatienceEvaluations) {
  EarlyStoppingOptions o;
  o.mode = "min";
  o.patience = 2;
  auto [stop, best] = run(o, {1.0, 0.8, 0.9, 0.85, 0.7});
  EXPECT_EQ(stop, 3);  // epochs 2 and 3 do not improve on 0.8
  EXPECT_EQ(best, 1);
}

TEST(EarlyStoppingTest, MaxModeAndImprovementResetsCounter) {
  EarlyStoppingOptions o;
  o.mode = "max";
  o.patience = 2;
  auto [stop, best] = run(o, {0.5, 0.4, 0.6, 0.55, 0.58, 0.59});
  EXPECT_EQ(stop, 4);
  EXPECT_EQ(best, 2);
}

TEST(EarlyStoppingTest, MinDeltaIgnoresTinyImprovements) {
  EarlyStoppingOptions o;
  o.mode = "max";
  o.patience = 2;
  o.min_delta = 0.05;
  auto [stop, best] = run(o, {0.5, 0.52, 0.54, 0.9});
  EXPECT_EQ(stop, 2);  // +0.02 and +0.04 are under min_delta
  EXPECT_EQ(best, 0);
}

TEST(EarlyStoppingTest, MinEpochsDelaysTheStop) {
  EarlyStoppingOptions o;
  o.patience = 1;
  o.min_epochs = 4;
  auto [stop, best] = run(o, {1.0, 2.0, 3.0, 4.0, 5.0});
  EXPECT_EQ(stop, 3);  // would stop after epoch 1, but not before 4 epochs completed
  EXPECT_EQ(best, 0);
}

TEST(EarlyStoppingTest, DisabledNeverStopsButTracksBest) {
  EarlyStoppingOptions o;
  o.enabled = false;
  o.patience = 1;
  auto [stop, best] = run(o, {3.0, 2.0, 5.0, 6.0, 7.0});
  EXPECT_EQ(stop, -1);
  EXPECT_EQ(best, 1);
}

TEST(EarlyStoppingTest, NonFiniteValuesNeverImprove) {
  EarlyStoppingOptions o;
  o.patience = 2;
  auto [stop, best] = run(o, {1.0, std::nan(""), std::numeric_limits<double>::infinity()});
  EXPECT_EQ(stop, 2);
  EXPECT_EQ(best, 0);
}

TEST(EarlyStoppingTest, StateRoundTripContinuesTheSequence) {
  EarlyStoppingOptions o;
  o.patience = 3;
  EarlyStopping a(o), b(o);
  const std::vector<double> v{1.0, 0.9, 0.95, 0.97, 0.99};
  for (int64_t e = 0; e < 3; ++e) a.update(e, v[e]);
  b.set_state(a.state());
  for (int64_t e = 3; e < 5; ++e) {
    a.update(e, v[e]);
    b.update(e, v[e]);
    EXPECT_EQ(a.should_stop(e), b.should_stop(e));
  }
  EXPECT_TRUE(b.should_stop(4));
}

TEST(EarlyStoppingTest, RejectsBadOptions) {
  EarlyStoppingOptions o;
  o.mode = "up";
  EXPECT_THROW(EarlyStopping{o}, mmintent::Error);
  o.mode = "min";
  o.patience = 0;
  EXPECT_THROW(EarlyStopping{o}, mmintent::Error);
}

}  // namespace
