// Off-policy estimates (IPS, SNIPS) of a policy's reward from another policy's log.

#include "mmintent/error.h"
#include "mmintent/evaluation/off_policy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace mmintent {
namespace {

// reward, propensity, target
const std::vector<LoggedOutcome> kLog = {{1, 0.5, 1}, {0, 0.25, 1}, {1, 0.8, 0}, {1, 0.1, 0.5}};

TEST(OffPolicyTest, IpsAgainstAHandComputation) {
  // x = r * target / p0 = 2, 0, 0, 5; mean 1.75; sample sd of (2, 0, 0, 5) = sqrt(17.75 / 3).
  const auto e = ips_estimate(kLog);
  EXPECT_EQ(e.n, 4);
  EXPECT_NEAR(e.value, 1.75, 1e-12);
  const double se = std::sqrt((0.0625 + 3.0625 + 3.0625 + 10.5625) / 3 / 4);
  EXPECT_NEAR(e.std_error, se, 1e-12);
  EXPECT_NEAR(e.lower, 1.75 - 1.96 * se, 1e-12);
  EXPECT_NEAR(e.upper, 1.75 + 1.96 * se, 1e-12);
  // weights 2, 4, 0, 5: (11)^2 / (4 + 16 + 25)
  EXPECT_NEAR(e.effective_samples, 121.0 / 45.0, 1e-12);
}

TEST(OffPolicyTest, ClippingCapsTheWeights) {
  // clip 3: weights 2, 3, 0, 3 -> x = 2, 0, 0, 3.
  const auto e = ips_estimate(kLog, 3);
  EXPECT_NEAR(e.value, 1.25, 1e-12);
  EXPECT_NEAR(e.effective_samples, 64.0 / 22.0, 1e-12);
}

TEST(OffPolicyTest, SnipsAgainstAHandComputation) {
  // weights 2, 4, 0, 5: value (2 + 5) / 11; delta-method error.
  const auto e = snips_estimate(kLog);
  const double v = 7.0 / 11.0;
  EXPECT_NEAR(e.value, v, 1e-12);
  const double ss = 4 * (1 - v) * (1 - v) + 16 * v * v + 25 * (1 - v) * (1 - v);
  EXPECT_NEAR(e.std_error, std::sqrt(ss) / 11, 1e-12);
  // A policy that never makes a logged choice: nothing is known.
  const auto none = snips_estimate({{1, 0.5, 0}, {0, 0.5, 0}});
  EXPECT_EQ(none.value, 0);
  EXPECT_EQ(none.effective_samples, 0);
}

TEST(OffPolicyTest, OnPolicyLogsGiveTheMeanReward) {
  // The logging policy evaluated on its own log: weights 1, both estimates = mean reward.
  std::vector<LoggedOutcome> log;
  for (int i = 0; i < 10; ++i) log.push_back({i % 3 == 0 ? 1.0 : 0.0, 0.3, 0.3});
  EXPECT_NEAR(ips_estimate(log).value, 0.4, 1e-12);
  EXPECT_NEAR(snips_estimate(log).value, 0.4, 1e-12);
  EXPECT_NEAR(ips_estimate(log).effective_samples, 10, 1e-9);
}

TEST(OffPolicyTest, TheIntervalCoversASimulatedPolicysRewardAsOftenAsItShould) {
  // Logging: uniform over 4 actions; action 0 pays with probability 0.7, the rest 0.2. The
  // evaluated policy always picks action 0: true value 0.7. 200 logs of 400 decisions each.
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0, 1);
  int ips_cover = 0, snips_cover = 0;
  for (int run = 0; run < 200; ++run) {
    std::vector<LoggedOutcome> log;
    for (int i = 0; i < 400; ++i) {
      const int a = static_cast<int>(u(rng) * 4);
      const double r = u(rng) < (a == 0 ? 0.7 : 0.2) ? 1 : 0;
      log.push_back({r, 0.25, a == 0 ? 1.0 : 0.0});
    }
    const auto i = ips_estimate(log), s = snips_estimate(log);
    ips_cover += i.lower <= 0.7 && 0.7 <= i.upper;
    snips_cover += s.lower <= 0.7 && 0.7 <= s.upper;
  }
  // 95% intervals: between 88% and 99% of 200 runs (binomial spread and the normal approximation).
  EXPECT_GE(ips_cover, 176);
  EXPECT_LE(ips_cover, 199);
  EXPECT_GE(snips_cover, 176);
  EXPECT_LE(snips_cover, 199);
}

TEST(OffPolicyTest, DoublyRobustAgainstAHandComputation) {
  // x = model_policy + target / p0 * (r - model_logged).
  std::vector<LoggedOutcome> log = {{1, 0.5, 1, 0.8, 0.8}, {0, 0.25, 0, 0.3, 0.9}, {1, 0.1, 1, 0.4, 0.4}};
  const double x0 = 0.8 + 2 * 0.2, x1 = 0.9, x2 = 0.4 + 10 * 0.6;
  const auto e = dr_estimate(log);
  const double mean = (x0 + x1 + x2) / 3;
  EXPECT_NEAR(e.value, mean, 1e-12);
  const double ss = (x0 - mean) * (x0 - mean) + (x1 - mean) * (x1 - mean) + (x2 - mean) * (x2 - mean);
  EXPECT_NEAR(e.std_error, std::sqrt(ss / 2 / 3), 1e-12);
  log[0].model_reward_policy = 1.5;
  EXPECT_THROW(dr_estimate(log), Error);
}

TEST(OffPolicyTest, DoublyRobustCoversAPolicyTheLogRarelyChoseWhereIpsCannot) {
  // Logging: action 0 with 0.9 + 0.1 / 20, else uniform among 20 actions (epsilon-greedy).
  // The evaluated policy picks action 1; action 0 pays 0.6, action 1 pays 0.8, and the reward
  // model knows it up to noise. True value 0.8. IPS sees action 1 in 0.5% of a 300-request
  // log, so it is usually far from 0.8 with an interval that says otherwise; DR is not.
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(0, 1);
  const double p_greedy = 0.9 + 0.1 / 20, p_other = 0.1 / 20;
  int dr_cover = 0, ips_cover = 0;
  for (int run = 0; run < 200; ++run) {
    std::vector<LoggedOutcome> log;
    for (int i = 0; i < 300; ++i) {
      const int a = u(rng) < 0.9 ? 0 : static_cast<int>(u(rng) * 20);
      const double r = u(rng) < (a == 0 ? 0.6 : a == 1 ? 0.8 : 0.1) ? 1 : 0;
      const double model_logged = (a == 0 ? 0.6 : a == 1 ? 0.8 : 0.1) + 0.05 * (u(rng) - 0.5);
      log.push_back({r, a == 0 ? p_greedy : p_other, a == 1 ? 1.0 : 0.0, model_logged, 0.8 + 0.05 * (u(rng) - 0.5)});
    }
    const auto d = dr_estimate(log), i = ips_estimate(log);
    dr_cover += d.lower <= 0.8 && 0.8 <= d.upper;
    ips_cover += i.lower <= 0.8 && 0.8 <= i.upper;
  }
  EXPECT_GE(dr_cover, 176);
  EXPECT_LT(ips_cover, 150);
}

TEST(OffPolicyTest, BadLogsAreErrors) {
  EXPECT_THROW(ips_estimate({}), Error);
  EXPECT_THROW(ips_estimate({{1, 0, 1}}), Error);
  EXPECT_THROW(snips_estimate({{1, 1.5, 1}}), Error);
  EXPECT_THROW(snips_estimate({{1, 0.5, -0.1}}), Error);
}

}  // namespace
}  // namespace mmintent
