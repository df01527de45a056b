#include "mmintent/evaluation/calibration.h"

#include "mmintent/error.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace mmintent {
namespace {


constexpr double kProbabilityFloor = 1e-30;

void check_matrix(const char* where, const std::vector<double>& values, int64_t num_classes,
                  const std::vector<int64_t>* labels) {
  if (num_classes < 1) {
    throw Error(std::string(where) + ": expected at least 1 class, found " +
                std::to_string(num_classes));
  }
  if (values.size() % static_cast<size_t>(num_classes) != 0) {
    throw Error(std::string(where) + ": " + std::to_string(values.size()) +
                " values are not a whole number of rows of " + std::to_string(num_classes));
  }
  const size_t rows = values.size() / static_cast<size_t>(num_classes);
  if (labels && labels->size() != rows) {
    throw Error(std::string(where) + ": expected " + std::to_string(rows) +
                " labels (one per row), found " + std::to_string(labels->size()));
  }
}

/// log sum_j exp((x_j - x_label) / T) for one row, accurate also when it is tiny (a confident
/// right prediction): then log1p of the other terms, so the search sees the NLL keep falling.
double row_nll(const double* row, int64_t k, int64_t label, double inv_t) {
  double m = 0;  // the label's own term is exp(0)
  for (int64_t j = 0; j < k; ++j) m = std::max(m, (row[j] - row[label]) * inv_t);
  if (m <= 0) {
    double others = 0;
    for (int64_t j = 0; j < k; ++j) {
      if (j != label) others += std::exp((row[j] - row[label]) * inv_t);
    }
    return std::log1p(others);
  }
  double s = 0;
  for (int64_t j = 0; j < k; ++j) s += std::exp((row[j] - row[label]) * inv_t - m);
  return m + std::log(s);
}

std::string format_double(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

}  // namespace

double temperature_nll(const std::vector<double>& logits, int64_t num_classes,
                       const std::vector<int64_t>& labels, double temperature) {
  check_matrix("temperature_nll", logits, num_classes, &labels);
  if (!(temperature > 0) || !std::isfinite(temperature)) {
    throw Error("temperature_nll: the temperature must be a positive finite number, found " +
                format_double(temperature));
  }
  const double inv_t = 1.0 / temperature;
  double sum = 0;
  int64_t n = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) continue;
    sum += row_nll(logits.data() + i * num_classes, num_classes, labels[i], inv_t);
    ++n;
  }
  return n ? sum / static_cast<double>(n) : 0.0;
}

TemperatureFit fit_temperature(const std::vector<double>& logits, int64_t num_classes,
                               const std::vector<int64_t>& labels,
                               const TemperatureFitOptions& options) {
  check_matrix("fit_temperature", logits, num_classes, &labels);
  if (!(options.min_temperature > 0) || !(options.max_temperature > options.min_temperature)) {
    throw Error("fit_temperature: expected 0 < min_temperature < max_temperature");
  }
  for (double v : logits) {
    if (!std::isfinite(v)) throw Error("fit_temperature: the scores hold a non-finite value");
  }
  TemperatureFit fit;
  for (int64_t y : labels) fit.count += y >= 0 && y < num_classes;
  if (fit.count == 0) return fit;
  auto f = [&](double u) {
    ++fit.evaluations;
    return temperature_nll(logits, num_classes, labels, std::exp(u));
  };
  fit.nll_before = temperature_nll(logits, num_classes, labels, 1.0);

  // Brent's bounded minimisation (Forsythe, Malcolm & Moler's FMIN, as in scipy's fminbound).
  const double lo = std::log(options.min_temperature), hi = std::log(options.max_temperature);
  const double sqrt_eps = std::sqrt(std::numeric_limits<double>::epsilon());
  const double golden = 0.5 * (3.0 - std::sqrt(5.0));
  double a = lo, b = hi;
  double v = a + golden * (b - a), w = v, x = v;  // v, w: previous points; x: best so far
  double fx = f(x), fv = fx, fw = fx;
  double d = 0, e = 0;
  double xm = 0.5 * (a + b);
  double tol1 = sqrt_eps * std::abs(x) + options.tolerance / 3.0, tol2 = 2.0 * tol1;
  while (std::abs(x - xm) > tol2 - 0.5 * (b - a) && fit.evaluations < options.max_evaluations) {
    bool golden_step = true;
    if (std::abs(e) > tol1) {  // try a parabola through x, v, w
      golden_step = false;
      double r = (x - w) * (fx - fv);
      double q = (x - v) * (fx - fw);
      double p = (x - v) * q - (x - w) * r;
      q = 2.0 * (q - r);
      if (q > 0) p = -p;
      q = std::abs(q);
      r = e;
      e = d;
      if (std::abs(p) < std::abs(0.5 * q * r) && p > q * (a - x) && p < q * (b - x)) {
        d = p / q;
        const double u = x + d;
        if (u - a < tol2 || b - u < tol2) d = xm >= x ? tol1 : -tol1;
      } else {
        golden_step = true;
      }
    }
    if (golden_step) {
      e = x >= xm ? a - x : b - x;
      d = golden * e;
    }
    const double u = x + (d >= 0 ? 1.0 : -1.0) * std::max(std::abs(d), tol1);
    const double fu = f(u);
    if (fu <= fx) {
      (u >= x ? a : b) = x;
      v = w, fv = fw;
      w = x, fw = fx;
      x = u, fx = fu;
    } else {
      (u < x ? a : b) = u;
      if (fu <= fw || w == x) {
        v = w, fv = fw;
        w = u, fw = fu;
      } else if (fu <= fv || v == x || v == w) {
        v = u, fv = fu;
      }
    }
    xm = 0.5 * (a + b);
    tol1 = sqrt_eps * std::abs(x) + options.tolerance / 3.0;
    tol2 = 2.0 * tol1;
  }
  // The interior search stops within tol of a bound when the optimum lies on it.
  const double edge = 1e-6 * (hi - lo);
  for (double bound : {lo, hi}) {
    if (std::abs(x - bound) < edge) {
      const double fb = f(bound);
      if (fb <= fx) x = bound, fx = fb;
      fit.at_bound = true;
    }
  }
  fit.temperature = std::exp(x);
  fit.nll_after = fx;
  if (fit.nll_after > fit.nll_before) {  // never worse than leaving the scores alone
    fit.temperature = 1.0;
    fit.nll_after = fit.nll_before;
    fit.at_bound = false;
  }
  return fit;
}

std::vector<double> softmax_with_temperature(const std::vector<double>& logits, int64_t num_classes,
                                             double temperature) {
  check_matrix("softmax_with_temperature", logits, num_classes, nullptr);
  if (!(temperature > 0) || !std::isfinite(temperature)) {
    throw Error(
        "softmax_with_temperature: the temperature must be a positive finite number, found " +
        format_double(temperature));
  }
  const double inv_t = 1.0 / temperature;
  std::vector<double> out(logits.size());
  const size_t k = static_cast<size_t>(num_classes);
  for (size_t r = 0; r < logits.size() / k; ++r) {
    const double* row = logits.data() + r * k;
    double* o = out.data() + r * k;
    double m = -std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < k; ++j) m = std::max(m, row[j] * inv_t);
    double s = 0;
    for (size_t j = 0; j < k; ++j) s += (o[j] = std::exp(row[j] * inv_t - m));
    for (size_t j = 0; j < k; ++j) o[j] /= s;
  }
  return out;
}

std::vector<double> logits_from_probabilities(const std::vector<double>& probs) {
  std::vector<double> out(probs.size());
  for (size_t i = 0; i < probs.size(); ++i) {
    out[i] = std::log(std::max(probs[i], kProbabilityFloor));
  }
  return out;
}

namespace {

double logit_of(double p) { return std::log(p) - std::log1p(-p); }

double sigmoid(double z) { return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z)); }

/// Per row, z_oos - logsumexp of the other columns: the model's log-odds of out-of-scope.
std::vector<double> oos_log_odds(const std::vector<double>& logits, int64_t k, int64_t oos) {
  const size_t rows = logits.size() / static_cast<size_t>(k);
  std::vector<double> out(rows);
  for (size_t r = 0; r < rows; ++r) {
    const double* row = logits.data() + r * static_cast<size_t>(k);
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < k; ++j) {
      if (j != oos) m = std::max(m, row[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      if (j != oos) sum += std::exp(row[j] - m);
    }
    out[r] = row[oos] - (m + std::log(sum));
  }
  return out;
}

/// The rows' logits without the out-of-scope column: [N, K-1].
std::vector<double> in_scope_logits(const std::vector<double>& logits, int64_t k, int64_t oos) {
  std::vector<double> out;
  out.reserve(logits.size() / static_cast<size_t>(k) * static_cast<size_t>(k - 1));
  for (size_t i = 0; i < logits.size(); ++i) {
    if (static_cast<int64_t>(i % static_cast<size_t>(k)) != oos) out.push_back(logits[i]);
  }
  return out;
}

void check_split(const char* where, const std::vector<double>& logits, int64_t k, int64_t oos) {
  check_matrix(where, logits, k, nullptr);
  if (k < 3) throw Error(std::string(where) + ": split calibration needs an out-of-scope class and two intents");
  if (oos < 0 || oos >= k) {
    throw Error(std::string(where) + ": the out-of-scope class " + std::to_string(oos) + " is not one of the " +
                std::to_string(k) + " columns");
  }
  for (double v : logits) {
    if (std::isnan(v)) throw Error(std::string(where) + ": the scores hold a NaN");
  }
}

/// logit(share) - logit(fitted_share): the prior shift added to the fitted log-odds.
double prior_shift(const SplitCalibration& f) {
  for (double p : {f.share, f.fitted_share}) {
    if (!(p > 0 && p < 1)) throw Error("split calibration: an out-of-scope share must lie in (0, 1), found " + format_double(p));
  }
  return logit_of(f.share) - logit_of(f.fitted_share);
}

}  // namespace

SplitCalibration fit_split_calibration(const std::vector<double>& logits, int64_t num_classes,
                                       const std::vector<int64_t>& labels, int64_t oos_index,
                                       const TemperatureFitOptions& options) {
  check_split("fit_split_calibration", logits, num_classes, oos_index);
  check_matrix("fit_split_calibration", logits, num_classes, &labels);
  SplitCalibration f;
  f.oos_index = oos_index;
  // The in-scope rows' temperature over the in-scope columns (labels renumbered past oos).
  std::vector<int64_t> in_labels(labels.size(), -1);
  std::vector<double> x;
  std::vector<bool> is_oos;
  const auto odds = oos_log_odds(logits, num_classes, oos_index);
  for (size_t i = 0; i < labels.size(); ++i) {
    const int64_t y = labels[i];
    if (y < 0 || y >= num_classes) continue;
    x.push_back(odds[i]);
    is_oos.push_back(y == oos_index);
    if (y != oos_index) in_labels[i] = y > oos_index ? y - 1 : y;
  }
  f.count = static_cast<int64_t>(x.size());
  f.oos_count = std::count(is_oos.begin(), is_oos.end(), true);
  if (f.oos_count == 0 || f.oos_count == f.count) {
    throw Error("fit_split_calibration: the fitting samples hold " + std::to_string(f.oos_count) +
                " out-of-scope and " + std::to_string(f.count - f.oos_count) +
                " in-scope samples; split calibration needs both");
  }
  f.in_scope_fit = fit_temperature(in_scope_logits(logits, num_classes, oos_index), num_classes - 1, in_labels, options);
  f.in_scope_temperature = f.in_scope_fit.temperature;
  // Platt scaling of the log-odds, with Platt's (1999) targets (n+ + 1) / (n+ + 2) and
  // 1 / (n- + 2) so that a separable split keeps finite parameters; Newton steps with halving.
  const double n_pos = static_cast<double>(f.oos_count), n_neg = static_cast<double>(f.count - f.oos_count);
  const double t_pos = (n_pos + 1) / (n_pos + 2), t_neg = 1 / (n_neg + 2);
  auto loss = [&](double a, double b) {
    double l = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double z = a * x[i] + b, t = is_oos[i] ? t_pos : t_neg;
      // -t log sigmoid(z) - (1 - t) log sigmoid(-z), stably
      l += (z > 0 ? (1 - t) * z + std::log1p(std::exp(-z)) : -t * z + std::log1p(std::exp(z)));
    }
    return l;
  };
  double a = 1, b = logit_of((n_pos + 1) / (f.count + 2.0));
  double current = loss(a, b);
  for (int iteration = 0; iteration < 100; ++iteration) {
    double ga = 0, gb = 0, haa = 0, hab = 0, hbb = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double p = sigmoid(a * x[i] + b), d = p - (is_oos[i] ? t_pos : t_neg), w = p * (1 - p);
      ga += d * x[i], gb += d;
      haa += w * x[i] * x[i], hab += w * x[i], hbb += w;
    }
    haa += 1e-12, hbb += 1e-12;
    const double det = haa * hbb - hab * hab;
    if (!(det > 0)) break;
    const double da = (hbb * ga - hab * gb) / det, db = (haa * gb - hab * ga) / det;
    double step = 1;
    bool improved = false;
    for (int halving = 0; halving < 40; ++halving, step /= 2) {
      const double next = loss(a - step * da, b - step * db);
      if (next <= current) {
        improved = true;
        a -= step * da, b -= step * db;
        const double gain = current - next;
        current = next;
        if (gain < 1e-12 * std::max(1.0, current)) iteration = 100;  // converged
        break;
      }
    }
    if (!improved) break;
  }
  f.slope = a;
  f.intercept = b;
  f.fitted_share = n_pos / static_cast<double>(f.count);
  f.share = f.fitted_share;
  return f;
}

std::vector<double> split_calibrated(const std::vector<double>& logits, int64_t num_classes,
                                     const SplitCalibration& fit) {
  check_split("split_calibrated", logits, num_classes, fit.oos_index);
  const double shift = prior_shift(fit);
  const auto odds = oos_log_odds(logits, num_classes, fit.oos_index);
  const auto in_scope = softmax_with_temperature(in_scope_logits(logits, num_classes, fit.oos_index),
                                                 num_classes - 1, fit.in_scope_temperature);
  std::vector<double> out(logits.size());
  const size_t k = static_cast<size_t>(num_classes);
  for (size_t r = 0; r < odds.size(); ++r) {
    const double p_oos = sigmoid(fit.slope * odds[r] + fit.intercept + shift);
    const double* q = in_scope.data() + r * (k - 1);
    double* o = out.data() + r * k;
    for (size_t j = 0, c = 0; j < k; ++j) o[j] = static_cast<int64_t>(j) == fit.oos_index ? p_oos : (1 - p_oos) * q[c++];
  }
  return out;
}

double estimate_oos_share(const std::vector<double>& logits, int64_t num_classes, const SplitCalibration& fit,
                          int64_t max_iterations, double tolerance) {
  check_split("estimate_oos_share", logits, num_classes, fit.oos_index);
  if (logits.empty()) throw Error("estimate_oos_share: no sample to estimate the out-of-scope share on");
  const auto odds = oos_log_odds(logits, num_classes, fit.oos_index);
  SplitCalibration f = fit;
  double share = f.fitted_share;
  for (int64_t it = 0; it < max_iterations; ++it) {
    f.share = share;
    const double shift = prior_shift(f);
    double sum = 0;
    for (double s : odds) sum += sigmoid(f.slope * s + f.intercept + shift);
    const double next = std::clamp(sum / static_cast<double>(odds.size()), 1e-4, 1 - 1e-4);
    const bool done = std::abs(next - share) < tolerance;
    share = next;
    if (done) break;
  }
  return share;
}

std::vector<double> calibrate_probabilities(const CalibrationFile& calibration, const std::vector<double>& probs,
                                            int64_t num_classes) {
  if (calibration.method == "split") {
    return split_calibrated(logits_from_probabilities(probs), num_classes, calibration.split);
  }
  if (calibration.method == "temperature" && calibration.temperature != 1.0) {
    return softmax_with_temperature(logits_from_probabilities(probs), num_classes, calibration.temperature);
  }
  return probs;
}

CalibrationMetrics reliability(const std::vector<double>& confidences,
                               const std::vector<bool>& correct, int64_t num_bins) {
  if (confidences.size() != correct.size()) {
    throw Error("reliability: " + std::to_string(confidences.size()) + " confidences but " +
                std::to_string(correct.size()) + " correctness flags");
  }
  if (num_bins < 1) throw Error("reliability: expected at least 1 bin");
  CalibrationMetrics m;
  m.bins.resize(static_cast<size_t>(num_bins));
  std::vector<double> conf_sum(m.bins.size(), 0.0), hits(m.bins.size(), 0.0);
  for (int64_t b = 0; b < num_bins; ++b) {
    m.bins[b].lower = static_cast<double>(b) / num_bins;
    m.bins[b].upper = static_cast<double>(b + 1) / num_bins;
  }
  int64_t right = 0;
  for (size_t i = 0; i < confidences.size(); ++i) {
    const double c = std::clamp(confidences[i], 0.0, 1.0);
    // Bin b holds (b/n, (b+1)/n]: the smallest b with c <= upper(b).
    int64_t b = static_cast<int64_t>(std::ceil(c * num_bins)) - 1;
    b = std::clamp<int64_t>(b, 0, num_bins - 1);
    if (b + 1 < num_bins && c > m.bins[b].upper) ++b;  // rounding of c * n
    if (b > 0 && c <= m.bins[b - 1].upper) --b;
    ++m.bins[b].count;
    conf_sum[b] += c;
    hits[b] += correct[i] ? 1.0 : 0.0;
    right += correct[i];
  }
  m.count = static_cast<int64_t>(confidences.size());
  m.accuracy = m.count ? static_cast<double>(right) / m.count : 0.0;
  for (size_t b = 0; b < m.bins.size(); ++b) {
    auto& bin = m.bins[b];
    if (bin.count == 0) continue;
    bin.accuracy = hits[b] / bin.count;
    bin.confidence = conf_sum[b] / bin.count;
    m.ece += static_cast<double>(bin.count) / m.count * std::abs(bin.accuracy - bin.confidence);
  }
  return m;
}

CalibrationMetrics calibration_metrics(const std::vector<double>& probs, int64_t num_classes,
                                       const std::vector<int64_t>& labels, int64_t num_bins) {
  check_matrix("calibration_metrics", probs, num_classes, &labels);
  std::vector<double> confidences;
  std::vector<bool> correct;
  double nll = 0;
  const size_t k = static_cast<size_t>(num_classes);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) continue;
    const double* row = probs.data() + i * k;
    const size_t arg = static_cast<size_t>(std::max_element(row, row + k) - row);
    confidences.push_back(row[arg]);
    correct.push_back(static_cast<int64_t>(arg) == labels[i]);
    nll -= std::log(std::max(row[labels[i]], kProbabilityFloor));
  }
  auto m = reliability(confidences, correct, num_bins);
  m.nll = m.count ? nll / static_cast<double>(m.count) : 0.0;
  return m;
}

}  // namespace mmintent
