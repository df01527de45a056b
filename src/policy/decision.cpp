#include "mmintent/policy/decision.h"

#include "mmintent/error.h"

#include <algorithm>
#include <numeric>

namespace mmintent {
namespace {

struct Cut {
  double threshold = 0;
  bool reached = true;
};

/// Samples (value, hit) kept when value >= threshold: the threshold of the largest kept set
/// (cut only between distinct values) whose hit rate reaches `target`; when none does, the
/// set with the highest hit rate (largest among ties). Midpoint thresholds, 0 = keep all.
Cut choose_cut(std::vector<std::pair<double, bool>> items, double target) {
  Cut cut;
  if (items.empty()) return cut;
  std::sort(items.begin(), items.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  const size_t n = items.size();
  int64_t hits = 0;
  size_t best_reached = 0, best_any = 0;  // prefix lengths; 0 = none yet
  double best_rate = -1;
  for (size_t i = 0; i < n; ++i) {
    hits += items[i].second;
    if (i + 1 < n && items[i + 1].first == items[i].first) continue;  // ties move together
    const size_t kept = i + 1;
    const double rate = static_cast<double>(hits) / static_cast<double>(kept);
    if (rate >= target) best_reached = kept;
    if (rate >= best_rate) best_rate = rate, best_any = kept;
  }
  const size_t kept = best_reached ? best_reached : best_any;
  cut.reached = best_reached > 0;
  cut.threshold = kept == n ? 0.0 : 0.5 * (items[kept - 1].first + items[kept].first);
  return cut;
}

Decision rule(const DecisionSample& s, const DecisionThresholds& t) {
  if (s.out_of_scope || s.top < t.min_confidence) return Decision::fallback;
  if (s.margin < t.clarify_margin) return Decision::clarify;
  return Decision::accept;
}

}  // namespace

double shown_propensity(int64_t intent, int64_t greedy, int64_t num_intents, double epsilon) {
  return (intent == greedy ? 1.0 - epsilon : 0.0) + epsilon / static_cast<double>(num_intents);
}

Shown choose_shown(int64_t greedy, int64_t num_intents, double epsilon, uint64_t random) {
  if (num_intents < 1) throw Error("choose_shown: no intents to show");
  if (greedy < 0 || greedy >= num_intents) {
    throw Error("choose_shown: intent " + std::to_string(greedy) + " is not among the " +
                std::to_string(num_intents));
  }
  if (!(epsilon >= 0 && epsilon <= 1)) throw Error("decision.explore.epsilon must be in [0, 1]");
  // Two independent draws from one 64-bit value (splitmix64 finaliser for the second).
  const double u = static_cast<double>(random >> 11) * 0x1.0p-53;  // [0, 1)
  uint64_t z = random + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  Shown s;
  s.intent = u < epsilon ? static_cast<int64_t>(z % static_cast<uint64_t>(num_intents)) : greedy;
  s.propensity = shown_propensity(s.intent, greedy, num_intents, epsilon);
  return s;
}

std::string to_string(Decision decision) {
  switch (decision) {
    case Decision::accept: return "accept";
    case Decision::clarify: return "clarify";
    case Decision::fallback: return "fallback";
  }
  return "accept";
}

DecisionResult decide(const double* probs, int64_t num_classes, bool out_of_scope,
                      int64_t oos_class, const DecisionThresholds& thresholds) {
  if (num_classes < 1) throw Error("decide: expected at least one class probability");
  DecisionResult r;
  r.top = *std::max_element(probs, probs + num_classes);
  for (int64_t j = 0; j < num_classes; ++j) {
    if (j == oos_class) continue;
    if (r.first < 0 || probs[j] > probs[r.first]) {
      r.second = r.first;
      r.first = j;
    } else if (r.second < 0 || probs[j] > probs[r.second]) {
      r.second = j;
    }
  }
  const double p1 = r.first >= 0 ? probs[r.first] : 0.0;
  r.margin = r.second >= 0 ? p1 - probs[r.second] : p1;
  DecisionSample s;
  s.top = r.top;
  s.margin = r.margin;
  s.out_of_scope = out_of_scope || r.first < 0;
  r.decision = rule(s, thresholds);
  return r;
}

std::vector<DecisionSample> decision_samples(const std::vector<double>& probs, int64_t num_classes,
                                             const std::vector<int64_t>& labels, int64_t oos_class,
                                             double oos_threshold) {
  std::vector<bool> rejected(labels.size(), false);
  if (oos_threshold >= 0 && num_classes >= 1 && probs.size() == labels.size() * static_cast<size_t>(num_classes)) {
    for (size_t i = 0; i < labels.size(); ++i) {
      const double* row = probs.data() + i * num_classes;
      rejected[i] = *std::max_element(row, row + num_classes) < oos_threshold;
    }
  }
  return decision_samples(probs, num_classes, labels, oos_class, rejected);
}

std::vector<DecisionSample> decision_samples(const std::vector<double>& probs, int64_t num_classes,
                                             const std::vector<int64_t>& labels, int64_t oos_class,
                                             const std::vector<bool>& rejected) {
  if (num_classes < 1 || probs.size() != labels.size() * static_cast<size_t>(num_classes) ||
      rejected.size() != labels.size()) {
    throw Error("decision_samples: expected " + std::to_string(labels.size()) + " rows of " +
                std::to_string(num_classes) + " probabilities and as many rejections, found " +
                std::to_string(probs.size()) + " values and " + std::to_string(rejected.size()) + " rejections");
  }
  std::vector<DecisionSample> out;
  out.reserve(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    const double* row = probs.data() + i * num_classes;
    const int64_t arg = std::max_element(row, row + num_classes) - row;
    const bool oos = (oos_class >= 0 && arg == oos_class) || rejected[i];
    const auto r = decide(row, num_classes, oos, oos_class, DecisionThresholds{});
    const int64_t y = labels[i];
    const bool in_scope = y >= 0 && y < num_classes && y != oos_class;
    DecisionSample s;
    s.top = r.top;
    s.margin = r.margin;
    s.out_of_scope = oos;
    s.first_correct = in_scope && r.first == y;
    s.top2_correct = in_scope && (r.first == y || r.second == y);
    out.push_back(s);
  }
  return out;
}

ChosenThresholds choose_decision_thresholds(const std::vector<DecisionSample>& val,
                                            const DecisionOptions& options) {
  ChosenThresholds out;
  out.thresholds.min_confidence = options.min_confidence;
  out.thresholds.clarify_margin = options.clarify_margin;
  if (options.min_confidence == -1) {
    std::vector<std::pair<double, bool>> items;
    for (const auto& s : val) {
      if (!s.out_of_scope) items.emplace_back(s.top, s.top2_correct);
    }
    const auto cut = choose_cut(std::move(items), options.target_precision);
    out.thresholds.min_confidence = cut.threshold;
    out.min_confidence_chosen = true;
    out.min_confidence_reached = cut.reached;
  }
  if (options.clarify_margin == -1) {
    std::vector<std::pair<double, bool>> items;
    for (const auto& s : val) {
      if (!s.out_of_scope && s.top >= out.thresholds.min_confidence) {
        items.emplace_back(s.margin, s.first_correct);
      }
    }
    const auto cut = choose_cut(std::move(items), options.target_precision);
    out.thresholds.clarify_margin = cut.threshold;
    out.clarify_margin_chosen = true;
    out.clarify_margin_reached = cut.reached;
  }
  return out;
}

DecisionStats decision_stats(const std::vector<DecisionSample>& samples,
                             const DecisionThresholds& thresholds) {
  DecisionStats st;
  int64_t accepted_right = 0, clarified_right = 0;
  for (const auto& s : samples) {
    switch (rule(s, thresholds)) {
      case Decision::accept:
        ++st.accepted;
        accepted_right += s.first_correct;
        break;
      case Decision::clarify:
        ++st.clarified;
        clarified_right += s.top2_correct;
        break;
      case Decision::fallback: ++st.fallbacks; break;
    }
  }
  st.count = static_cast<int64_t>(samples.size());
  auto ratio = [](int64_t a, int64_t b) { return b ? static_cast<double>(a) / b : 0.0; };
  st.accept_share = ratio(st.accepted, st.count);
  st.clarify_share = ratio(st.clarified, st.count);
  st.fallback_share = ratio(st.fallbacks, st.count);
  st.accepted_accuracy = ratio(accepted_right, st.accepted);
  st.clarify_top2_accuracy = ratio(clarified_right, st.clarified);
  return st;
}

std::vector<CoveragePoint> coverage_curve(const std::vector<DecisionSample>& samples) {
  std::vector<std::pair<double, bool>> items;
  for (const auto& s : samples) {
    if (!s.out_of_scope) items.emplace_back(s.top, s.first_correct);
  }
  std::sort(items.begin(), items.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<CoveragePoint> curve;
  const double n = static_cast<double>(samples.size());
  int64_t hits = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    hits += items[i].second;
    if (i + 1 < items.size() && items[i + 1].first == items[i].first) continue;
    const double kept = static_cast<double>(i + 1);
    curve.push_back({items[i].first, kept / n, hits / kept});
  }
  std::reverse(curve.begin(), curve.end());
  return curve;
}

}  // namespace mmintent
