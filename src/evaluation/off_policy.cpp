#include "mmintent/evaluation/off_policy.h"

#include "mmintent/error.h"

#include <cmath>
#include <string>

namespace mmintent {
namespace {

void check(const std::vector<LoggedOutcome>& log) {
  if (log.empty()) throw Error("off-policy estimate: the log is empty");
  for (size_t i = 0; i < log.size(); ++i) {
    const auto& o = log[i];
    if (!(o.propensity > 0 && o.propensity <= 1)) {
      throw Error("off-policy estimate: outcome " + std::to_string(i) + " has propensity " +
                  std::to_string(o.propensity) + ", outside (0, 1]");
    }
    if (!(o.target >= 0 && o.target <= 1)) {
      throw Error("off-policy estimate: outcome " + std::to_string(i) + " has target probability " +
                  std::to_string(o.target) + ", outside [0, 1]");
    }
  }
}

double effective_samples(double sum_w, double sum_w2) { return sum_w2 > 0 ? sum_w * sum_w / sum_w2 : 0; }

/// The mean of per-record terms x with its standard error (sample deviation / sqrt(n)) and
/// interval, and the effective sample size of the weights w: what IPS and DR share.
OffPolicyEstimate mean_estimate(const std::vector<double>& x, const std::vector<double>& w, double z) {
  const double n = static_cast<double>(x.size());
  double sum = 0, sum_w = 0, sum_w2 = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sum += x[i];
    sum_w += w[i];
    sum_w2 += w[i] * w[i];
  }
  OffPolicyEstimate e;
  e.n = static_cast<int64_t>(x.size());
  e.value = sum / n;
  double ss = 0;
  for (double v : x) ss += (v - e.value) * (v - e.value);
  e.std_error = x.size() > 1 ? std::sqrt(ss / (n - 1) / n) : 0;
  e.lower = e.value - z * e.std_error;
  e.upper = e.value + z * e.std_error;
  e.effective_samples = effective_samples(sum_w, sum_w2);
  return e;
}

}  // namespace

OffPolicyEstimate ips_estimate(const std::vector<LoggedOutcome>& log, double clip, double z) {
  check(log);
  std::vector<double> x(log.size()), w(log.size());
  for (size_t i = 0; i < log.size(); ++i) {
    w[i] = log[i].target / log[i].propensity;
    if (clip > 0 && w[i] > clip) w[i] = clip;
    x[i] = log[i].reward * w[i];
  }
  return mean_estimate(x, w, z);
}

OffPolicyEstimate snips_estimate(const std::vector<LoggedOutcome>& log, double z) {
  check(log);
  double sum_w = 0, sum_wr = 0, sum_w2 = 0;
  for (const auto& o : log) {
    const double w = o.target / o.propensity;
    sum_w += w;
    sum_wr += w * o.reward;
    sum_w2 += w * w;
  }
  OffPolicyEstimate e;
  e.n = static_cast<int64_t>(log.size());
  if (sum_w <= 0) return e;
  e.value = sum_wr / sum_w;
  double ss = 0;
  for (const auto& o : log) {
    const double w = o.target / o.propensity;
    ss += w * w * (o.reward - e.value) * (o.reward - e.value);
  }
  e.std_error = std::sqrt(ss) / sum_w;
  e.lower = e.value - z * e.std_error;
  e.upper = e.value + z * e.std_error;
  e.effective_samples = effective_samples(sum_w, sum_w2);
  return e;
}

OffPolicyEstimate dr_estimate(const std::vector<LoggedOutcome>& log, double z) {
  check(log);
  for (size_t i = 0; i < log.size(); ++i) {
    const auto& o = log[i];
    if (!(o.model_reward_logged >= 0 && o.model_reward_logged <= 1 && o.model_reward_policy >= 0 &&
          o.model_reward_policy <= 1)) {
      throw Error("off-policy estimate: outcome " + std::to_string(i) + " has a model reward outside [0, 1]");
    }
  }
  std::vector<double> x(log.size()), w(log.size());
  for (size_t i = 0; i < log.size(); ++i) {
    const auto& o = log[i];
    w[i] = o.target / o.propensity;
    x[i] = o.model_reward_policy + w[i] * (o.reward - o.model_reward_logged);
  }
  return mean_estimate(x, w, z);
}

}  // namespace mmintent
