#pragma once
/// Off-policy evaluation: what a new policy's reward would be, estimated from a log of another
/// policy's choices (the shown intent, its propensity p0 and the reward it earned) before anyone
/// serves the new one. Inverse propensity scoring (IPS) and its self-normalised form (SNIPS;
/// Swaminathan & Joachims 2015), each with a normal-approximation confidence interval, and the
/// doubly robust estimate (Dudik, Langford & Li 2011), which adds a model of the reward so that
/// requests where the evaluated policy chose otherwise than the log still count. Plain
/// std::vector inputs, no LibTorch types.

#include <cstdint>
#include <vector>

namespace mmintent {

/// One logged decision, seen from the policy being evaluated.
struct LoggedOutcome {
  double reward = 0;      ///< what the logged choice earned (here 1 accepted, 0 otherwise)
  double propensity = 1;  ///< the logging policy's probability of that choice, in (0, 1]
  double target = 0;      ///< the evaluated policy's probability of the same choice, in [0, 1]
  /// Doubly robust only: a model's expected reward for the logged choice, and for the choice
  /// of the evaluated policy (its expectation under that policy), both in [0, 1]. Here: the
  /// evaluated model's calibrated probability that the intent is the right one.
  double model_reward_logged = 0;
  double model_reward_policy = 0;
};

struct OffPolicyEstimate {
  double value = 0;       ///< estimated expected reward of the evaluated policy
  double std_error = 0;   ///< its standard error
  double lower = 0, upper = 0;  ///< value -/+ z * std_error (z = 1.96: 95%)
  int64_t n = 0;          ///< logged outcomes used
  /// (sum w)^2 / sum w^2 of the importance weights w = target / propensity: how many samples
  /// the estimate is worth; far below n means a few large weights decide it.
  double effective_samples = 0;
};

/// IPS: mean of reward * min(target / propensity, clip); standard error sd / sqrt(n) (sample
/// standard deviation). clip <= 0: no clipping (unbiased). Throws mmintent::Error for an empty
/// log, a propensity outside (0, 1] or a target outside [0, 1].
OffPolicyEstimate ips_estimate(const std::vector<LoggedOutcome>& log, double clip = 0,
                               double z = 1.96);

/// SNIPS: sum(w * reward) / sum(w), w = target / propensity; standard error by the delta
/// method, sqrt(sum w^2 (reward - value)^2) / sum w. When every weight is 0 (the evaluated
/// policy never makes a logged choice) the value is 0 with an interval of [0, 0] and
/// effective_samples 0: the log says nothing about it. Throws as ips_estimate does.
OffPolicyEstimate snips_estimate(const std::vector<LoggedOutcome>& log, double z = 1.96);

/// Doubly robust: mean of model_reward_policy + (target / propensity) (reward -
/// model_reward_logged); standard error sd / sqrt(n). Unbiased when either the propensities or
/// the reward model are right; with a good reward model its variance is far below IPS's when
/// the evaluated policy often chooses otherwise than the log. Throws as ips_estimate does, and
/// for model rewards outside [0, 1].
OffPolicyEstimate dr_estimate(const std::vector<LoggedOutcome>& log, double z = 1.96);

}  // namespace mmintent
