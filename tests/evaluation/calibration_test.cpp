#include "mmintent/evaluation/calibration.h"

#include "mmintent/error.h"
#include "mmintent/evaluation/plots.h"
#include "mmintent/evaluation/report.h"
#include "mmintent/run/serving.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <cmath>
#include <filesystem>
#include <random>

using namespace mmintent;

namespace {

/// N rows of K logits: z ~ N(0, 1.5^2), labels drawn from softmax(z), returned logits z * k.
/// The model behind the labels is softmax(z) = softmax(logits / k), so the NLL-optimal
/// temperature of the returned logits is k (up to sampling noise).
void synthetic(int64_t n, int64_t k_classes, double k, unsigned seed, std::vector<double>* logits,
               std::vector<int64_t>* labels) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.5);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  logits->clear();
  labels->clear();
  std::vector<double> z(k_classes);
  for (int64_t i = 0; i < n; ++i) {
    double m = -1e300, s = 0;
    for (auto& v : z) m = std::max(m, v = normal(rng));
    for (double v : z) s += std::exp(v - m);
    double u = uniform(rng) * s, acc = 0;
    int64_t y = k_classes - 1;
    for (int64_t j = 0; j < k_classes; ++j) {
      acc += std::exp(z[j] - m);
      if (u < acc) {
        y = j;
        break;
      }
    }
    labels->push_back(y);
    for (double v : z) logits->push_back(v * k);
  }
}

TEST(CalibrationTest, TemperatureFitRecoversAKnownScale) {
  std::vector<double> logits;
  std::vector<int64_t> labels;
  for (double k : {2.5, 0.4}) {  // over-confident and under-confident logits
    synthetic(20000, 10, k, 7, &logits, &labels);
    const auto fit = fit_temperature(logits, 10, labels);
    EXPECT_NEAR(fit.temperature, k, 0.05 * k) << "k = " << k;
    EXPECT_LT(fit.nll_after, fit.nll_before);
    EXPECT_EQ(fit.count, 20000);
    EXPECT_FALSE(fit.at_bound);
    EXPECT_NEAR(fit.nll_after, temperature_nll(logits, 10, labels, fit.temperature), 1e-12);
  }
}

TEST(CalibrationTest, TemperatureFitFindsTheTrueOptimum) {
  std::vector<double> logits;
  std::vector<int64_t> labels;
  synthetic(2000, 6, 3.0, 11, &logits, &labels);
  const auto fit = fit_temperature(logits, 6, labels);
  // A dense grid on log T never beats the fit, and the derivative vanishes there.
  double grid_best = 1e300;
  for (int i = 0; i <= 1000; ++i) {
    const double t = std::exp(std::log(0.01) + i * (std::log(100.0) - std::log(0.01)) / 1000);
    grid_best = std::min(grid_best, temperature_nll(logits, 6, labels, t));
  }
  EXPECT_LE(fit.nll_after, grid_best + 1e-12);
  const double h = 1e-5, t = fit.temperature;
  const double slope = (temperature_nll(logits, 6, labels, t * std::exp(h)) -
                        temperature_nll(logits, 6, labels, t * std::exp(-h))) /
                       (2 * h);
  EXPECT_NEAR(slope, 0.0, 1e-6);
  EXPECT_LT(fit.evaluations, 100);
}

TEST(CalibrationTest, SeparableDataEndsOnTheLowerBound) {
  // Every arg-max is right: the NLL keeps falling as T -> 0.
  const std::vector<double> logits{2, 0, 0, 0, 3, 1, 1, 0, 4};
  const std::vector<int64_t> labels{0, 1, 2};
  TemperatureFitOptions o;
  o.min_temperature = 0.05;
  const auto fit = fit_temperature(logits, 3, labels, o);
  EXPECT_TRUE(fit.at_bound);
  EXPECT_DOUBLE_EQ(fit.temperature, 0.05);
}

TEST(CalibrationTest, RowsWithoutAClassAreSkippedAndNoRowsGiveOne) {
  const std::vector<double> logits{2, 0, 0, 2, 1, 1};
  // The third row's label (2) is not one of the 2 classes (an out-of-scope sample).
  const double two_rows = temperature_nll({2, 0, 0, 2}, 2, {0, 1}, 1.5);
  EXPECT_DOUBLE_EQ(temperature_nll(logits, 2, {0, 1, 2}, 1.5), two_rows);
  const auto fit = fit_temperature(logits, 2, {5, 5, -1});
  EXPECT_EQ(fit.count, 0);
  EXPECT_DOUBLE_EQ(fit.temperature, 1.0);
  EXPECT_THROW(temperature_nll(logits, 2, {0, 1}, 1.0), Error);  // 3 rows, 2 labels
  EXPECT_THROW(temperature_nll(logits, 4, {0}, 1.0), Error);     // 6 values, rows of 4
  EXPECT_THROW(temperature_nll(logits, 2, {0, 1, 0}, 0.0), Error);
}

TEST(CalibrationTest, SoftmaxWithTemperatureOfLogProbabilities) {
  const std::vector<double> probs{0.7, 0.2, 0.1, 0.0, 0.5, 0.5};
  const auto logits = logits_from_probabilities(probs);
  const auto same = softmax_with_temperature(logits, 3, 1.0);
  for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(same[i], probs[i], 1e-12);
  // T = 2: p^(1/2), renormalised.
  const auto soft = softmax_with_temperature(logits, 3, 2.0);
  const double s = std::sqrt(0.7) + std::sqrt(0.2) + std::sqrt(0.1);
  EXPECT_NEAR(soft[0], std::sqrt(0.7) / s, 1e-12);
  EXPECT_NEAR(soft[2], std::sqrt(0.1) / s, 1e-12);
  EXPECT_NEAR(soft[4], 0.5, 1e-12);
}

TEST(CalibrationTest, EceOnHandComputedBins) {
  // 15 bins of width 1/15. 0.95 -> bin 14, 0.65 and 0.62 -> bin 9, 0.30 -> bin 4.
  const auto m = reliability({0.95, 0.95, 0.65, 0.62, 0.30}, {true, false, true, true, false});
  ASSERT_EQ(m.bins.size(), 15u);
  EXPECT_EQ(m.bins[14].count, 2);
  EXPECT_DOUBLE_EQ(m.bins[14].accuracy, 0.5);
  EXPECT_DOUBLE_EQ(m.bins[14].confidence, 0.95);
  EXPECT_EQ(m.bins[9].count, 2);
  EXPECT_NEAR(m.bins[9].confidence, 0.635, 1e-12);
  EXPECT_EQ(m.bins[4].count, 1);
  // |0.5 - 0.95| * 2/5 + |1 - 0.635| * 2/5 + |0 - 0.3| * 1/5
  EXPECT_NEAR(m.ece, 0.18 + 0.146 + 0.06, 1e-12);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.6);
  EXPECT_EQ(m.count, 5);
}

TEST(CalibrationTest, BinsAreOpenBelowClosedAbove) {
  // 0.4 = 6/15 is the upper edge of bin 5; 1.0 is in the last bin; 0 in the first.
  const auto m = reliability({6.0 / 15, 1.0, 0.0, 1.0 / 15 + 1e-12}, {true, true, false, true});
  EXPECT_EQ(m.bins[5].count, 1);
  EXPECT_EQ(m.bins[14].count, 1);
  EXPECT_EQ(m.bins[0].count, 1);
  EXPECT_EQ(m.bins[1].count, 1);
  EXPECT_DOUBLE_EQ(m.bins[5].upper, 0.4);
  // A perfectly calibrated set: two bins, each as accurate as it is confident.
  const auto perfect = reliability({0.5, 0.5, 1.0, 1.0}, {true, false, true, true}, 10);
  EXPECT_NEAR(perfect.ece, 0.0, 1e-12);
  EXPECT_THROW(reliability({0.5}, {true, false}), Error);
}

TEST(CalibrationTest, CalibrationMetricsOfAProbabilityMatrix) {
  // Rows: right at 0.8, wrong at 0.6 (gold 0 has 0.3), out-of-scope label 3 left out.
  const std::vector<double> probs{0.8, 0.1, 0.1, 0.3, 0.6, 0.1, 0.2, 0.2, 0.6};
  const auto m = calibration_metrics(probs, 3, {0, 0, 3});
  EXPECT_EQ(m.count, 2);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.5);
  EXPECT_NEAR(m.nll, -(std::log(0.8) + std::log(0.3)) / 2, 1e-12);
  // 0.8 -> bin 11 (0.7333, 0.8], 0.6 -> bin 8 (0.5333, 0.6]: |1-.8|/2 + |0-.6|/2.
  EXPECT_NEAR(m.ece, 0.1 + 0.3, 1e-12);
}

TEST(CalibrationTest, CalibrationFileRoundTripAndDefaults) {
  test::TempDir dir;
  const auto none = load_calibration(RunDirectory(dir.str()));
  EXPECT_EQ(none.method, "none");
  EXPECT_DOUBLE_EQ(none.temperature, 1.0);

  CalibrationFile c;
  c.method = "temperature";
  c.temperature = 1.7364;
  c.fitted_on = "val";
  c.fit.count = 12;
  c.fit.nll_before = 0.9;
  c.fit.nll_after = 0.7;
  save_calibration(RunDirectory(dir.str()), c);
  const auto back = load_calibration(RunDirectory(dir.str()));
  EXPECT_EQ(back.method, "temperature");
  EXPECT_DOUBLE_EQ(back.temperature, 1.7364);
  EXPECT_EQ(back.fitted_on, "val");
  EXPECT_EQ(back.fit.count, 12);
  EXPECT_DOUBLE_EQ(back.fit.nll_after, 0.7);

  dir.write("calibration.json", R"({"temperature": -2})");
  try {
    load_calibration(RunDirectory(dir.str()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("calibration.json"), std::string::npos) << e.what();
  }
  dir.write("calibration.json", "not json");
  EXPECT_THROW(load_calibration(RunDirectory(dir.str())), Error);
}

TEST(CalibrationTest, CalibrationReportMergesIntoTheSplitAndDrawsTheDiagram) {
  test::TempDir dir;
  dir.write("report.json", R"({"test": {"accuracy": 0.5}, "val": {"accuracy": 0.25}})");
  CalibrationReport r;
  r.method = "temperature";
  r.temperature = 1.5;
  r.before = reliability({0.95, 0.95, 0.65, 0.62, 0.30}, {true, false, true, true, false});
  r.before.nll = 0.9;
  r.after = reliability({0.8, 0.8, 0.6, 0.6, 0.3}, {true, false, true, true, false});
  r.after.nll = 0.7;
  write_calibration_report(dir.str(), "test", r);
  const auto j = nlohmann::json::parse(test::read_file((dir.path() / "report.json").string()));
  EXPECT_DOUBLE_EQ(j["test"]["accuracy"].get<double>(), 0.5);  // kept
  EXPECT_DOUBLE_EQ(j["val"]["accuracy"].get<double>(), 0.25);
  const auto& c = j["test"]["calibration"];
  EXPECT_EQ(c["method"], "temperature");
  EXPECT_DOUBLE_EQ(c["temperature"].get<double>(), 1.5);
  EXPECT_EQ(c["count"], 5);
  EXPECT_NEAR(c["before"]["ece"].get<double>(), 0.386, 1e-12);
  EXPECT_DOUBLE_EQ(c["after"]["nll"].get<double>(), 0.7);
  ASSERT_EQ(c["before"]["bins"].size(), 15u);
  EXPECT_EQ(c["before"]["bins"][14]["count"], 2);
  const auto png = cv::imread((dir.path() / "reliability_test.png").string());
  ASSERT_FALSE(png.empty());
  EXPECT_GT(png.cols, png.rows);  // two panels side by side
  // An empty split removes a stale diagram.
  write_calibration_report(dir.str(), "test", CalibrationReport{});
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "reliability_test.png"));
  EXPECT_THROW(write_calibration_report(dir.str(), "../x", r), Error);
  EXPECT_THROW(draw_reliability_diagram({}, "t", (dir.path() / "x.png").string()), Error);
}

}  // namespace

namespace {

/// Rows of K = 4 logits with the out-of-scope class at column 1: out-of-scope with probability
/// `share`; the model's log-odds of out-of-scope s ~ N(+1, 1) for out-of-scope rows and N(-1, 1)
/// for the others, so that the true log-odds is 2 s + logit(share); the in-scope logits z * t
/// with in-scope labels drawn from softmax(z), so that the in-scope temperature is t.
void split_synthetic(int64_t n, double share, double t, unsigned seed, std::vector<double>* logits,
                     std::vector<int64_t>* labels) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  logits->clear();
  labels->clear();
  for (int64_t i = 0; i < n; ++i) {
    const bool oos = uniform(rng) < share;
    const double s = (oos ? 1.0 : -1.0) + normal(rng);
    double z[3], m = -1e300, sum = 0;
    for (double& v : z) m = std::max(m, v = 1.5 * normal(rng));
    for (double v : z) sum += std::exp(v - m);
    int64_t y = 1;
    if (!oos) {
      double u = uniform(rng) * sum, acc = 0;
      y = 3;
      for (int j = 0; j < 3; ++j) {
        acc += std::exp(z[j] - m);
        if (u < acc) {
          y = j == 0 ? 0 : j + 1;
          break;
        }
      }
    }
    double lse = 0;  // of the returned in-scope logits z * t
    for (double v : z) lse += std::exp(v * t - m * t);
    lse = m * t + std::log(lse);
    logits->insert(logits->end(), {z[0] * t, s + lse, z[1] * t, z[2] * t});
    labels->push_back(y);
  }
}

double logit(double p) { return std::log(p / (1 - p)); }

}  // namespace

TEST(SplitCalibrationTest, FitRecoversTheOutOfScopeOddsAndTheInScopeTemperature) {
  std::vector<double> logits;
  std::vector<int64_t> labels;
  split_synthetic(20000, 0.05, 2.0, 7, &logits, &labels);
  const auto fit = fit_split_calibration(logits, 4, labels, 1);
  EXPECT_EQ(fit.oos_index, 1);
  EXPECT_EQ(fit.count, 20000);
  EXPECT_NEAR(fit.fitted_share, 0.05, 0.005);
  EXPECT_DOUBLE_EQ(fit.share, fit.fitted_share);
  EXPECT_EQ(fit.oos_count, std::llround(fit.fitted_share * 20000));
  EXPECT_NEAR(fit.slope, 2.0, 0.2);
  EXPECT_NEAR(fit.intercept, logit(fit.fitted_share), 0.3);
  EXPECT_NEAR(fit.in_scope_temperature, 2.0, 0.1);

  // Served: rows sum to 1 and the out-of-scope column is the fitted sigmoid.
  const auto p = split_calibrated(logits, 4, fit);
  for (size_t r = 0; r < 50; ++r) {
    double sum = 0;
    for (int j = 0; j < 4; ++j) sum += p[r * 4 + j];
    EXPECT_NEAR(sum, 1.0, 1e-12);
  }
}

TEST(SplitCalibrationTest, HandComputedRowAndThePriorShift) {
  SplitCalibration f;
  f.oos_index = 0;
  f.slope = 1;
  f.intercept = 0;
  f.in_scope_temperature = 1;
  f.fitted_share = 0.5;
  f.share = 0.5;
  // In-scope logits [0, log 3]: s = 0 - log 4, P(oos) = 1/5, in scope 1/4 and 3/4 of 4/5.
  const std::vector<double> row{0.0, 0.0, std::log(3.0)};
  auto p = split_calibrated(row, 3, f);
  EXPECT_NEAR(p[0], 0.2, 1e-12);
  EXPECT_NEAR(p[1], 0.2, 1e-12);
  EXPECT_NEAR(p[2], 0.6, 1e-12);
  // Traffic with 20% out of scope: the odds move by logit(0.2) - logit(0.5) = log(1/4): 1/17.
  f.share = 0.2;
  p = split_calibrated(row, 3, f);
  EXPECT_NEAR(p[0], 1.0 / 17, 1e-12);
  EXPECT_NEAR(p[1], 4.0 / 17, 1e-12);
  EXPECT_NEAR(p[2], 12.0 / 17, 1e-12);
  // The in-scope temperature: logits / 2 -> [0, log 3 / 2]: sqrt 3 : 1 ... as 1 : sqrt 3.
  f.share = 0.5;
  f.in_scope_temperature = 2;
  p = split_calibrated(row, 3, f);
  EXPECT_NEAR(p[0], 0.2, 1e-12);  // the log-odds is read from the raw logits
  EXPECT_NEAR(p[2] / p[1], std::sqrt(3.0), 1e-12);
  // calibrate_probabilities reads probabilities (log p as logits): the same row.
  CalibrationFile file;
  file.method = "split";
  file.split = f;
  const std::vector<double> probs{0.2, 0.2, 0.6};
  const auto q = calibrate_probabilities(file, probs, 3);
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(q[j], split_calibrated(logits_from_probabilities(probs), 3, f)[j], 1e-15);
  file.method = "none";
  EXPECT_EQ(calibrate_probabilities(file, probs, 3), probs);
  file.method = "temperature";
  file.temperature = 2;
  EXPECT_EQ(calibrate_probabilities(file, probs, 3), softmax_with_temperature(logits_from_probabilities(probs), 3, 2));

  f.share = 1.0;
  EXPECT_THROW(split_calibrated(row, 3, f), Error);
  f.share = 0.5;
  f.oos_index = 3;
  EXPECT_THROW(split_calibrated(row, 3, f), Error);
}

TEST(SplitCalibrationTest, EstimatedShareOfUnlabelledTrafficAndTheCalibrationItGives) {
  std::vector<double> val, traffic;
  std::vector<int64_t> val_labels, traffic_labels;
  split_synthetic(20000, 0.05, 1.0, 11, &val, &val_labels);
  split_synthetic(20000, 0.30, 1.0, 12, &traffic, &traffic_labels);
  auto fit = fit_split_calibration(val, 4, val_labels, 1);
  const double truth = std::count(traffic_labels.begin(), traffic_labels.end(), 1) / 20000.0;
  const double estimate = estimate_oos_share(traffic, 4, fit);
  EXPECT_NEAR(estimate, truth, 0.02);
  // At the val share the traffic's out-of-scope probabilities are too low on average; at the
  // estimated share their mean is the share, and ECE and NLL (all samples) are lower.
  auto mean_oos = [&](const std::vector<double>& p) {
    double sum = 0;
    for (size_t r = 0; r < traffic_labels.size(); ++r) sum += p[r * 4 + 1];
    return sum / static_cast<double>(traffic_labels.size());
  };
  const auto at_val_share = split_calibrated(traffic, 4, fit);
  fit.share = estimate;
  const auto at_estimate = split_calibrated(traffic, 4, fit);
  EXPECT_LT(mean_oos(at_val_share), truth - 0.1);
  EXPECT_NEAR(mean_oos(at_estimate), truth, 0.02);
  const auto before = calibration_metrics(at_val_share, 4, traffic_labels);
  const auto after = calibration_metrics(at_estimate, 4, traffic_labels);
  EXPECT_LT(after.ece, 0.02);
  EXPECT_LT(after.ece, before.ece / 2);
  EXPECT_LT(after.nll, before.nll);
  // The same traffic at the fitting split's share stays there.
  EXPECT_NEAR(estimate_oos_share(val, 4, fit), fit.fitted_share, 0.01);
  EXPECT_THROW(estimate_oos_share({}, 4, fit), Error);
}

TEST(SplitCalibrationTest, FitNeedsBothKindsOfSampleAndAnOutOfScopeColumn) {
  const std::vector<double> logits{0, 1, 2, 0, 2, 1};
  try {
    fit_split_calibration(logits, 3, {0, 2}, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("0 out-of-scope"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fit_split_calibration(logits, 3, {1, 1}, 1), Error);
  EXPECT_THROW(fit_split_calibration(logits, 3, {0, 1}, 3), Error);
  EXPECT_THROW(fit_split_calibration({0, 1, 0, 1}, 2, {0, 1}, 1), Error);  // K < 3
  // Separable samples keep finite parameters (Platt's targets).
  const auto f = fit_split_calibration(logits, 3, {1, 0}, 1);
  EXPECT_TRUE(std::isfinite(f.slope) && std::isfinite(f.intercept));
}

TEST(SplitCalibrationTest, CalibrationFileKeepsTheSplitFitAndNamesABrokenOne) {
  test::TempDir dir;
  CalibrationFile c;
  c.method = "split";
  c.fitted_on = "val";
  c.split.oos_index = 7;
  c.split.in_scope_temperature = 0.78;
  c.split.slope = 0.76;
  c.split.intercept = 0.66;
  c.split.fitted_share = 0.032;
  c.split.share = 0.18;
  c.split.share_from = "--oos-share";
  c.split.count = 3100;
  c.split.oos_count = 100;
  save_calibration(RunDirectory(dir.str()), c);
  const auto back = load_calibration(RunDirectory(dir.str()));
  EXPECT_EQ(back.method, "split");
  EXPECT_EQ(back.split.oos_index, 7);
  EXPECT_DOUBLE_EQ(back.split.in_scope_temperature, 0.78);
  EXPECT_DOUBLE_EQ(back.split.slope, 0.76);
  EXPECT_DOUBLE_EQ(back.split.intercept, 0.66);
  EXPECT_DOUBLE_EQ(back.split.fitted_share, 0.032);
  EXPECT_DOUBLE_EQ(back.split.share, 0.18);
  EXPECT_EQ(back.split.share_from, "--oos-share");
  EXPECT_EQ(back.split.oos_count, 100);

  for (const auto& [text, named] :
       std::vector<std::pair<std::string, std::string>>{
           {R"({"method": "split", "temperature": 1})", "'split' is missing"},
           {R"({"method": "split", "temperature": 1, "split": {"oos_index": 1, "in_scope_temperature": 1,
                "slope": 1, "intercept": 0, "fitted_share": 0.1, "share": 1.5}})", "'share' must lie in (0, 1)"},
           {R"({"method": "split", "temperature": 1, "split": {"oos_index": 1, "in_scope_temperature": 1,
                "intercept": 0, "fitted_share": 0.1, "share": 0.5}})", "no numeric 'slope'"},
           {R"({"method": "platt", "temperature": 1})", "unknown 'method' 'platt'"}}) {
    dir.write("calibration.json", text);
    try {
      load_calibration(RunDirectory(dir.str()));
      ADD_FAILURE() << "expected an error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("calibration.json"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
    }
  }
}
