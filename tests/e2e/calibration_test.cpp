// End-to-end tests of calibration, the decision policy and rewriting through the `mmintent` CLI
// (MMINTENT_CLI): a tiny text-only run with noisy labels (so the validation split is not
// separable and the temperature is an interior optimum) is trained once per test; the tests
// check calibration.json, decision.json, the report.json sections, the PNGs, `calibrate`,
// `eval` and `predict --rewrite`.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "support/cli.h"
#include "support/support.h"

#ifndef MMINTENT_CLI
#error "MMINTENT_CLI must name the built mmintent executable"
#endif

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::CliResult;

const std::vector<std::string> kIntents = {"refund", "stock", "delivery", "greeting"};
const std::vector<std::vector<std::string>> kTexts = {
    {"i want to return this item", "please refund my purchase", "how do i send this back",
     "can i get my money back", "this arrived broken and i want a refund"},
    {"is this available in the store", "do you have this in stock",
     "when will this be back in stock", "can i buy this today",
     "how many of these do you have left"},
    {"where is my parcel", "when will my order arrive", "my delivery is late",
     "track my package please", "has my order shipped yet"},
    {"hello there", "hi how are you", "good morning to you", "hey nice to meet you",
     "greetings friend"},
};
const std::vector<std::string> kOpenings = {"", "um ", "so ", "hi ", "excuse me "};

/// Writes data/<split>.jsonl: n samples, balanced over the intents, 20% of labels flipped at
/// random (so no split is separable).
std::string write_split(const fs::path& root, const std::string& split, int n, unsigned seed) {
  std::mt19937 rng(seed);
  fs::create_directories(root / "data");
  const auto path = root / "data" / (split + ".jsonl");
  std::ofstream out(path);
  for (int i = 0; i < n; ++i) {
    const int intent = i % 4;
    int label = intent;
    if (rng() % 5 == 0) label = static_cast<int>(rng() % 4);
    const auto& texts = kTexts[intent];
    out << json{{"text", kOpenings[rng() % kOpenings.size()] + texts[rng() % texts.size()]},
                {"label", kIntents[label]}}
               .dump()
        << "\n";
  }
  return path.string();
}

std::string config_text(const std::string& output_dir) {
  return test::fixture_text("configs/calibration.yaml") + "output:\n  dir: " + output_dir + "\n";
}

class CalibrationEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path();
    write_split(root_, "train", 240, 1);
    val_ = write_split(root_, "val", 80, 2);
    test_ = write_split(root_, "test", 80, 3);
    run_ = (root_ / "runs" / "cal").string();
    config_ = dir_.write("config.yaml", config_text(run_));
  }

  /// Runs `mmintent ARGS` with the temp dir as working directory; logs go to cli_logs/.
  CliResult cli(const std::vector<std::string>& args) const {
    return test::run_cli(MMINTENT_CLI, args, root_, {}, root_ / "cli_logs");
  }

  static json read_json(const fs::path& p) {
    std::ifstream in(p);
    EXPECT_TRUE(in.good()) << p;
    return json::parse(in);
  }

  static std::vector<json> json_lines(const std::string& text) {
    std::vector<json> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line[0] == '{') out.push_back(json::parse(line));
    }
    return out;
  }

  test::TempDir dir_;
  fs::path root_;
  std::string val_, test_, run_, config_;
};

TEST_F(CalibrationEndToEndTest, TrainingFitsTemperatureThresholdsAndReportsThem) {
  const auto r = cli({"train", config_});
  ASSERT_EQ(r.code, 0) << r.dump();
  const fs::path run(run_);
  const auto cal = read_json(run / "calibration.json");
  EXPECT_EQ(cal["method"], "temperature");
  EXPECT_EQ(cal["fitted_on"], "val");
  const double t = cal["temperature"].get<double>();
  EXPECT_GT(t, 0.01);
  EXPECT_LT(t, 100.0);
  EXPECT_FALSE(cal["at_bound"].get<bool>()) << cal.dump();
  EXPECT_LE(cal["nll_after"].get<double>(), cal["nll_before"].get<double>());

  const auto decision = read_json(run / "decision.json");
  EXPECT_TRUE(decision["chosen_on_val"]["min_confidence"].get<bool>());
  const double min_conf = decision["min_confidence"].get<double>();
  EXPECT_GE(min_conf, 0.0);
  EXPECT_LE(min_conf, 1.0);

  const auto report = read_json(run / "report.json");
  for (const char* split : {"val", "test"}) {
    const auto& s = report[split];
    ASSERT_TRUE(s.contains("calibration")) << s.dump();
    const auto& c = s["calibration"];
    EXPECT_DOUBLE_EQ(c["temperature"].get<double>(), t);
    EXPECT_EQ(c["count"], 80);
    EXPECT_EQ(c["before"]["bins"].size(), 15u);
    for (const char* when : {"before", "after"}) {
      EXPECT_GE(c[when]["ece"].get<double>(), 0.0);
      EXPECT_GT(c[when]["nll"].get<double>(), 0.0);
    }
    // Temperature scaling never changes the arg-max.
    EXPECT_DOUBLE_EQ(c["before"]["accuracy"].get<double>(), c["after"]["accuracy"].get<double>());
    EXPECT_DOUBLE_EQ(c["after"]["accuracy"].get<double>(), s["accuracy"].get<double>());

    const auto& d = s["decision"];
    EXPECT_NEAR(
        d["accept"].get<double>() + d["clarify"].get<double>() + d["fallback"].get<double>(), 1.0,
        1e-9);
    EXPECT_EQ(d["accepted"].get<int64_t>() + d["clarified"].get<int64_t>() +
                  d["fallbacks"].get<int64_t>(),
              80);
    EXPECT_DOUBLE_EQ(d["min_confidence"].get<double>(), min_conf);

    const auto& rw = s["rewrite"];
    EXPECT_EQ(rw["count"], 80);
    EXPECT_GT(rw["normalised_differs"].get<int64_t>(), 0);  // the "um " openings
    EXPECT_GE(rw["intent_unchanged_rate"].get<double>(), 0.0);

    for (const std::string png : {"reliability_", "coverage_"}) {
      const auto img = cv::imread((run / (png + split + ".png")).string());
      EXPECT_FALSE(img.empty()) << png << split;
    }
  }
  // On the split it was fitted on, the NLL can only go down.
  EXPECT_LE(report["val"]["calibration"]["after"]["nll"].get<double>(),
            report["val"]["calibration"]["before"]["nll"].get<double>() + 1e-6);
  // The accepted predictions on val meet the target the thresholds were chosen for.
  if (decision["target_reached"]["clarify_margin"].get<bool>() &&
      report["val"]["decision"]["accepted"] > 0) {
    EXPECT_GE(report["val"]["decision"]["accepted_accuracy"].get<double>(), 0.9 - 1e-9);
  }
  EXPECT_NE(r.out.find("calibration (temperature"), std::string::npos) << r.dump();
  EXPECT_NE(r.out.find("rewriting: intent unchanged"), std::string::npos) << r.dump();

  // eval applies the same calibration and thresholds.
  const auto e = cli({"eval", run_, "--split", "test"});
  ASSERT_EQ(e.code, 0) << e.dump();
  const auto again = read_json(run / "report.json")["test"];
  EXPECT_EQ(again["calibration"], report["test"]["calibration"]);
  EXPECT_EQ(again["decision"], report["test"]["decision"]);
  EXPECT_EQ(again["rewrite"], report["test"]["rewrite"]);
}

TEST_F(CalibrationEndToEndTest, PostHocCalibrationOfARunWithoutOne) {
  ASSERT_EQ(cli({"train", config_, "calibration.enabled=false"}).code, 0);
  const fs::path run(run_);
  EXPECT_FALSE(fs::exists(run / "calibration.json"));
  auto report = read_json(run / "report.json")["test"]["calibration"];
  EXPECT_EQ(report["method"], "none");
  EXPECT_DOUBLE_EQ(report["temperature"].get<double>(), 1.0);
  EXPECT_EQ(report["before"], report["after"]);

  const auto c = cli({"calibrate", run_});
  ASSERT_EQ(c.code, 0) << c.dump();
  EXPECT_NE(c.out.find("temperature: "), std::string::npos) << c.dump();
  const auto cal = read_json(run / "calibration.json");
  EXPECT_EQ(cal["method"], "temperature");
  ASSERT_EQ(cli({"eval", run_, "--split", "val"}).code, 0);
  report = read_json(run / "report.json")["val"]["calibration"];
  EXPECT_EQ(report["method"], "temperature");
  EXPECT_DOUBLE_EQ(report["temperature"].get<double>(), cal["temperature"].get<double>());
  EXPECT_LE(report["after"]["nll"].get<double>(), report["before"]["nll"].get<double>() + 1e-6);

  // Training with calibration fits the same temperature on the same val predictions.
  const auto other = (root_ / "runs" / "cal2").string();
  ASSERT_EQ(cli({"train", config_, "output.dir=" + other}).code, 0);
  EXPECT_NEAR(read_json(fs::path(other) / "calibration.json")["temperature"].get<double>(),
              cal["temperature"].get<double>(), 1e-6);
}

TEST_F(CalibrationEndToEndTest, PredictRewriteEmitsJsonLinesConsistentWithEval) {
  ASSERT_EQ(cli({"train", config_}).code, 0);
  auto r = cli({"predict", run_, "--text", "Um,   please refund my purchase!!!", "--rewrite"});
  ASSERT_EQ(r.code, 0) << r.dump();
  auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.dump();
  const auto& j = lines[0];
  EXPECT_EQ(j["text"], "please refund my purchase!");
  ASSERT_TRUE(j.contains("decision") && j.contains("request") && j.contains("confidence"))
      << j.dump();
  const std::string decision = j["decision"];
  if (decision == "accept") {
    EXPECT_EQ(j["intent"], "refund") << j.dump();
    EXPECT_EQ(j["request"].get<std::string>().rfind("Refund request (", 0), 0u) << j.dump();
  } else if (decision == "clarify") {
    EXPECT_EQ(j["candidates"].size(), 2u);
    EXPECT_EQ(j["request"].get<std::string>().rfind("Did you mean ", 0), 0u) << j.dump();
  } else {
    EXPECT_EQ(j["request"], "Sorry, I did not get that.");
  }
  // Without --rewrite the decision is printed with the intents.
  r = cli({"predict", run_, "--text", "please refund my purchase"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(r.out.find("decision: "), std::string::npos) << r.dump();

  // A whole manifest: one JSON line per record, every decision's request as configured.
  const auto out = (root_ / "rewritten.jsonl").string();
  r = cli({"predict", run_, "--manifest", test_, "--out", out, "--rewrite"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto rewritten = json_lines(test::read_file(out));
  ASSERT_EQ(rewritten.size(), 80u);
  std::map<std::string, int> decisions;
  for (const auto& x : rewritten) {
    ASSERT_TRUE(x.contains("line") && x.contains("label") && x.contains("request")) << x.dump();
    ++decisions[x["decision"].get<std::string>()];
    EXPECT_EQ(x["text"].get<std::string>().find("um "), std::string::npos) << x.dump();
    if (x["decision"] == "fallback") {
      EXPECT_EQ(x["request"], "Sorry, I did not get that.");
    }
    if (x["decision"] == "accept" && x["intent"] != "refund") {
      EXPECT_EQ(x["request"], x["text"]);
    }
  }
  // The decision shares agree with the evaluator's.
  const auto d = read_json(fs::path(run_) / "report.json")["test"]["decision"];
  EXPECT_EQ(decisions["accept"], d["accepted"].get<int>());
  EXPECT_EQ(decisions["clarify"], d["clarified"].get<int>());
  EXPECT_EQ(decisions["fallback"], d["fallbacks"].get<int>());

  // Calibrated probabilities agree with the evaluator's misclassified listing.
  const auto plain = (root_ / "plain.jsonl").string();
  ASSERT_EQ(cli({"predict", run_, "--manifest", test_, "--out", plain}).code, 0);
  const auto predictions = json_lines(test::read_file(plain));
  int checked = 0;
  for (const auto& m :
       json_lines(test::read_file((fs::path(run_) / "misclassified_test.jsonl").string()))) {
    const auto& p = predictions.at(m["index"].get<size_t>());
    EXPECT_EQ(p["top"][0]["intent"], m["top"][0]["label"]);
    EXPECT_NEAR(p["top"][0]["probability"].get<double>(), m["top"][0]["prob"].get<double>(), 1e-6);
    ++checked;
  }
  EXPECT_GT(checked, 0) << "labels are noisy, so some test predictions are wrong";
}

TEST_F(CalibrationEndToEndTest, SplitCalibrationServesTheOutOfScopeShareItIsGiven) {
  // "greeting" plays the out-of-scope class (a trained class, method class).
  ASSERT_EQ(cli({"train", config_, "oos.label=greeting", "calibration.method=split"}).code, 0);
  const fs::path run(run_);
  const auto labels = read_json(run / "labels.json");
  int64_t oos_index = -1;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == "greeting") oos_index = static_cast<int64_t>(i);
  }
  ASSERT_GE(oos_index, 0) << labels.dump();
  auto share_of = [](const std::string& manifest) {
    double n = 0, oos = 0;
    for (const auto& x : json_lines(test::read_file(manifest))) n += 1, oos += x["label"] == "greeting";
    return oos / n;
  };
  auto cal = read_json(run / "calibration.json");
  ASSERT_EQ(cal["method"], "split") << cal.dump();
  EXPECT_EQ(cal["split"]["oos_index"], oos_index);
  EXPECT_NEAR(cal["split"]["fitted_share"].get<double>(), share_of(val_), 1e-12);
  EXPECT_EQ(cal["split"]["share"], cal["split"]["fitted_share"]);
  EXPECT_EQ(cal["split"]["share_from"], "val");
  auto report = read_json(run / "report.json")["test"]["calibration"];
  EXPECT_EQ(report["method"], "split");
  EXPECT_NEAR(report["oos_share"].get<double>(), share_of(test_), 1e-12);
  EXPECT_EQ(report["split"]["share"], cal["split"]["share"]);
  ASSERT_TRUE(report.contains("in_scope")) << report.dump();

  // predict serves what eval reports: the misclassified listing's probabilities.
  auto probabilities = [&](const std::string& name) {
    const auto out = (root_ / (name + ".jsonl")).string();
    const auto r = cli({"predict", run_, "--manifest", test_, "--out", out, "--top-k", "4"});
    EXPECT_EQ(r.code, 0) << r.dump();
    std::vector<std::map<std::string, double>> rows;
    for (const auto& x : json_lines(test::read_file(out))) {
      rows.emplace_back();
      double sum = 0;
      for (const auto& t : x["top"]) sum += rows.back()[t["intent"]] = t["probability"].get<double>();
      EXPECT_NEAR(sum, 1.0, 1e-5) << x.dump();
    }
    return rows;
  };
  const auto at_val_share = probabilities("split_val_share");
  ASSERT_EQ(at_val_share.size(), 80u);
  int checked = 0;
  for (const auto& m : json_lines(test::read_file((run / "misclassified_test.jsonl").string()))) {
    const auto& row = at_val_share.at(m["index"].get<size_t>());
    EXPECT_NEAR(row.at(m["top"][0]["label"].get<std::string>()), m["top"][0]["prob"].get<double>(), 1e-6);
    ++checked;
  }
  EXPECT_GT(checked, 0);

  // A larger out-of-scope share raises every row's out-of-scope probability and keeps the
  // ratios among the intents.
  const double fitted = cal["split"]["fitted_share"].get<double>();
  const double larger = std::min(0.95, fitted + 0.3);
  auto c = cli({"calibrate", run_, "--oos-share", std::to_string(larger), "--json"});
  ASSERT_EQ(c.code, 0) << c.dump();
  const auto summary = json::parse(c.out);
  EXPECT_EQ(summary["method"], "split");
  EXPECT_NEAR(summary["split"]["share"].get<double>(), larger, 1e-9);
  cal = read_json(run / "calibration.json");
  EXPECT_NEAR(cal["split"]["share"].get<double>(), larger, 1e-9);
  EXPECT_EQ(cal["split"]["share_from"], "--oos-share");
  EXPECT_NEAR(cal["split"]["fitted_share"].get<double>(), fitted, 1e-12);
  const auto at_larger = probabilities("split_larger");
  for (size_t i = 0; i < at_larger.size(); ++i) {
    EXPECT_GT(at_larger[i].at("greeting"), at_val_share[i].at("greeting")) << i;
    EXPECT_NEAR((at_larger[i].at("refund") / at_larger[i].at("stock")) /
                    (at_val_share[i].at("refund") / at_val_share[i].at("stock")),
                1.0, 1e-4)
        << i;
  }

  // Estimated on unlabelled traffic: the labels of the manifest are not read.
  const auto unlabelled = (root_ / "traffic.jsonl").string();
  {
    std::ofstream out(unlabelled);
    for (const auto& x : json_lines(test::read_file(test_))) out << json{{"text", x["text"]}}.dump() << "\n";
  }
  c = cli({"calibrate", run_, "--oos-share-from", unlabelled, "--json"});
  ASSERT_EQ(c.code, 0) << c.dump();
  cal = read_json(run / "calibration.json");
  EXPECT_EQ(cal["split"]["share_from"], "estimated on " + unlabelled);
  const double estimated = cal["split"]["share"].get<double>();
  EXPECT_GT(estimated, 0.0);
  EXPECT_LT(estimated, 1.0);
  c = cli({"calibrate", run_, "--oos-share-from", test_, "--json"});  // the same texts, labelled
  ASSERT_EQ(c.code, 0) << c.dump();
  EXPECT_NEAR(read_json(run / "calibration.json")["split"]["share"].get<double>(), estimated, 1e-12);

  // Refusals: a share outside (0, 1), both options, a run calibrated by temperature.
  const auto before = test::read_file((run / "calibration.json").string());
  c = cli({"calibrate", run_, "--oos-share", "1.5"});
  EXPECT_EQ(c.code, 3) << c.dump();
  EXPECT_NE(c.err.find("--oos-share"), std::string::npos) << c.dump();
  EXPECT_NE(cli({"calibrate", run_, "--oos-share", "0.2", "--oos-share-from", unlabelled}).code, 0);
  c = cli({"calibrate", run_, "--oos-share-from", (root_ / "absent.jsonl").string()});
  EXPECT_EQ(c.code, 4) << c.dump();
  EXPECT_NE(c.err.find("absent.jsonl"), std::string::npos) << c.dump();
  EXPECT_EQ(test::read_file((run / "calibration.json").string()), before);
  const auto plain = (root_ / "runs" / "plain").string();
  ASSERT_EQ(cli({"train", config_, "oos.label=greeting", "output.dir=" + plain}).code, 0);
  c = cli({"calibrate", plain, "--oos-share", "0.3"});
  EXPECT_EQ(c.code, 3) << c.dump();
  EXPECT_NE(c.err.find("calibration.method"), std::string::npos) << c.dump();
  EXPECT_EQ(read_json(fs::path(plain) / "calibration.json")["method"], "temperature");
  // An ensemble averages temperature-scaled members: a split-calibrated member is refused.
  const auto ensemble = (root_ / "runs" / "ensemble").string();
  c = cli({"ensemble", plain, run_, "--out", ensemble});
  EXPECT_EQ(c.code, 5) << c.dump();
  EXPECT_NE(c.err.find("calibrated by split"), std::string::npos) << c.dump();
  c = cli({"ensemble", run_, plain, "--out", ensemble});  // the first member's config becomes the ensemble's
  EXPECT_EQ(c.code, 3) << c.dump();
  EXPECT_NE(c.err.find("calibration.method"), std::string::npos) << c.dump();
  EXPECT_FALSE(fs::exists(fs::path(ensemble) / "ensemble.json"));
  // Split calibration needs a trained out-of-scope class, and fits on val's out-of-scope
  // samples: refused before training when val has none.
  const auto bad = (root_ / "runs" / "bad").string();
  c = cli({"train", config_, "calibration.method=split", "output.dir=" + bad});
  EXPECT_EQ(c.code, 3) << c.dump();
  EXPECT_NE(c.err.find("calibration.method"), std::string::npos) << c.dump();
  const auto no_oos = (root_ / "val_in_scope.jsonl").string();
  {
    std::ofstream out(no_oos);
    for (const auto& x : json_lines(test::read_file(val_))) {
      if (x["label"] != "greeting") out << x.dump() << "\n";
    }
  }
  c = cli({"train", config_, "oos.label=greeting", "calibration.method=split", "data.val=" + no_oos, "output.dir=" + bad});
  EXPECT_EQ(c.code, 4) << c.dump();
  EXPECT_NE(c.err.find("val_in_scope.jsonl"), std::string::npos) << c.dump();
  EXPECT_NE(c.err.find("0 of"), std::string::npos) << c.dump();
  EXPECT_FALSE(fs::exists(fs::path(bad) / "model.pt"));
}

TEST_F(CalibrationEndToEndTest, BadSettingsAreConfigErrors) {
  struct Case {
    std::string override_, key, words;
  };
  const std::vector<Case> cases{
      {"rewrite.templates.refund=Refund {amount}", "rewrite.templates.refund", "{amount}"},
      {"rewrite.templates.nope=hello {text}", "rewrite.templates.nope", "not an intent"},
      {"rewrite.clarify_template=which {first", "rewrite.clarify_template", "unmatched"},
      {"decision.min_confidence=-0.5", "decision.min_confidence", "-1"},
      {"decision.clarify_margin=2", "decision.clarify_margin", "out of range"},
      {"calibration.method=platt", "calibration.method", "temperature"},
      {"rewrite.fillers=um", "rewrite.fillers", "list"},
      {"rewrite.display_names=[a]", "rewrite.display_names", "mapping"},
  };
  for (const auto& c : cases) {
    const auto r =
        cli({"train", config_, c.override_, "output.dir=" + (root_ / "runs" / "bad").string()});
    EXPECT_EQ(r.code, 3) << c.override_ << "\n" << r.dump();
    EXPECT_NE(r.err.find(c.key), std::string::npos) << r.dump();
    EXPECT_NE(r.err.find(c.words), std::string::npos) << r.dump();
    EXPECT_FALSE(fs::exists(root_ / "runs" / "bad" / "model.pt"));
  }
}

}  // namespace
}  // namespace mmintent
