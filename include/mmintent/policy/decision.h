#pragma once
/// What the product does with a (calibrated) prediction: `accept` the top intent, `clarify`
/// between the two most probable intents, or `fallback` (out of scope, or not confident
/// enough). Thresholds come from the config or are chosen on the validation split for a
/// target precision of accepted predictions. Plain std::vector inputs, no LibTorch types.

#include <cstdint>
#include <string>
#include <vector>

namespace mmintent {

enum class Decision { accept, clarify, fallback };

/// "accept", "clarify" or "fallback".
std::string to_string(Decision decision);

/// Exploration when serving: `decision.explore: {epsilon}`. With probability 1 - epsilon the
/// product shows the most probable intent, else one of the K intents drawn uniformly (the most
/// probable one included), so every intent has a propensity >= epsilon / K and the feedback
/// on shown intents teaches an off-policy learner (`tune.objective: ips|snips`).
struct ExploreOptions {
  double epsilon = 0;  ///< in [0, 1]; 0 = always the most probable intent
};

/// The intent shown and the probability the exploring policy had of showing it.
struct Shown {
  int64_t intent = -1;
  double propensity = 1;
};

/// The probability that the exploring policy shows `intent` when `greedy` is the most probable
/// of `num_intents`: (1 - epsilon) [intent == greedy] + epsilon / num_intents.
double shown_propensity(int64_t intent, int64_t greedy, int64_t num_intents, double epsilon);

/// The intent to show, drawn with the 64 random bits `random` (e.g. a seeded hash of the
/// request): the greedy one with probability 1 - epsilon, else a uniform draw. Deterministic
/// in its arguments. Throws mmintent::Error for num_intents < 1, greedy outside [0, K) or
/// epsilon outside [0, 1].
Shown choose_shown(int64_t greedy, int64_t num_intents, double epsilon, uint64_t random);

/// The `decision:` config section. A threshold of -1 is chosen on the validation split (see
/// choose_decision_thresholds). Usage: `decision: {min_confidence: -1, clarify_margin: 0.1}`.
struct DecisionOptions {
  /// Fallback when the top probability is under this (0: never for low confidence).
  double min_confidence = 0;
  /// Clarify when the top two in-scope intents are closer than this (0: never).
  double clarify_margin = 0;
  /// The precision of accepted predictions a chosen (-1) threshold aims for on val.
  double target_precision = 0.9;
  ExploreOptions explore;  ///< `decision.explore`: what to show (see ExploreOptions)
};

/// The thresholds in force.
struct DecisionThresholds {
  double min_confidence = 0;
  double clarify_margin = 0;
};

/// The decision for one row of K probabilities (calibrated; not necessarily summing to 1).
struct DecisionResult {
  Decision decision = Decision::accept;
  int64_t first = -1;   ///< most probable class that is not `oos_class` (-1 when none)
  int64_t second = -1;  ///< the runner-up among those (-1 when K has only one such class)
  double top = 0;       ///< the largest probability of the row (any class)
  double margin = 0;    ///< p(first) - p(second); p(first) when there is no second
};

/// The rule, in this order: fallback when `out_of_scope` (the run's out-of-scope handling said
/// so) or top < min_confidence; clarify when margin < clarify_margin, between `first` and
/// `second`; accept `first` otherwise. `oos_class` is the index of an out-of-scope class among
/// the K (-1: none); it is never a clarify candidate. Throws mmintent::Error when K < 1.
DecisionResult decide(const double* probs, int64_t num_classes, bool out_of_scope,
                      int64_t oos_class, const DecisionThresholds& thresholds);

/// What the evaluator knows about one labelled sample.
struct DecisionSample {
  double top = 0;              ///< top probability (calibrated)
  double margin = 0;           ///< p(first) - p(second) among in-scope intents
  bool out_of_scope = false;   ///< the run's out-of-scope handling rejects it
  bool first_correct = false;  ///< `first` is the gold intent
  bool top2_correct = false;   ///< the gold intent is `first` or `second`
};

/// The samples of labelled probability rows [N,K] (row-major, calibrated): a row is out of
/// scope when its arg-max is `oos_class` (-1: no such class) or, with `oos_threshold` >= 0
/// (oos.method: threshold), when its top probability is under it. A gold label outside the K
/// classes or equal to `oos_class` (an out-of-scope sample) is never "correct". Throws
/// mmintent::Error on inconsistent sizes.
std::vector<DecisionSample> decision_samples(const std::vector<double>& probs, int64_t num_classes,
                                             const std::vector<int64_t>& labels, int64_t oos_class,
                                             double oos_threshold);
/// The same with the run's out-of-scope rejections given per row (`rejected`, one per label:
/// a score under the threshold of oos.method threshold or both) instead of a top-probability
/// threshold; a row whose arg-max is `oos_class` is out of scope too.
std::vector<DecisionSample> decision_samples(const std::vector<double>& probs, int64_t num_classes,
                                             const std::vector<int64_t>& labels, int64_t oos_class,
                                             const std::vector<bool>& rejected);

/// The thresholds in force: the configured values, with each -1 chosen on `val` by this rule
/// (each is the smallest value on the sample grid meeting the target, so coverage is largest):
/// 1. min_confidence (when -1): the smallest t such that, among the samples not out of scope
///    with top >= t, the gold intent is among the two candidates for at least
///    target_precision of them: what the product acts on or asks about holds the answer.
/// 2. clarify_margin (when -1): with that min_confidence, the smallest m such that, among the
///    samples not out of scope with top >= min_confidence and margin >= m (the accepted ones),
///    the top intent is right for at least target_precision of them.
/// A threshold lies halfway between the value of the last kept sample and the next lower one
/// (0 when nothing is dropped), so rounding cannot move a sample across it. When no value
/// reaches the target, the one with the highest precision is taken (the smallest among ties)
/// and `reached` says so. With no usable sample the chosen threshold is 0.
struct ChosenThresholds {
  DecisionThresholds thresholds;
  bool min_confidence_chosen = false, clarify_margin_chosen = false;
  bool min_confidence_reached = true, clarify_margin_reached = true;
};
ChosenThresholds choose_decision_thresholds(const std::vector<DecisionSample>& val,
                                            const DecisionOptions& options);

/// Shares and accuracies of the three decisions over labelled samples.
struct DecisionStats {
  int64_t count = 0;
  int64_t accepted = 0, clarified = 0, fallbacks = 0;
  double accept_share = 0, clarify_share = 0, fallback_share = 0;
  double accepted_accuracy = 0;      ///< top intent right among accepted (0 when none)
  double clarify_top2_accuracy = 0;  ///< gold among the two candidates, among clarified
};
DecisionStats decision_stats(const std::vector<DecisionSample>& samples,
                             const DecisionThresholds& thresholds);

/// One point of the coverage/accuracy curve.
struct CoveragePoint {
  double threshold = 0;  ///< min_confidence
  double coverage = 0;   ///< share of all samples accepted (top >= threshold, not out of scope)
  double accuracy = 0;   ///< accuracy of the accepted ones
};

/// The curve as the confidence threshold sweeps up through every distinct top probability of
/// the samples not out of scope (clarify margin ignored), accepting top >= threshold: the first
/// point covers everything in scope, coverage then decreases. Empty when every sample is out
/// of scope.
std::vector<CoveragePoint> coverage_curve(const std::vector<DecisionSample>& samples);

}  // namespace mmintent
