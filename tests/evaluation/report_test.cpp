#include "mmintent/evaluation/plots.h"
#include "mmintent/evaluation/report.h"

#include "mmintent/error.h"
#include "support/support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <sstream>

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

const std::vector<std::string> kLabels{"greet", "order", "cancel"};

/// Six samples, three classes. Rows (gold -> predicted): 0->0, 0->1, 1->1, 1->2, 2->2, 2->2.
/// Confusion [gold][pred] = [[1,1,0],[0,1,1],[0,0,2]]; accuracy 4/6; per-class F1 2/3, 1/2,
/// 4/5; macro F1 = (2/3 + 1/2 + 4/5) / 3. Rows 1 and 3 are wrong; their sample indices 4 and 1.
Predictions six_samples() {
  Predictions p;
  p.probs = at::tensor({0.7f, 0.2f, 0.1f,  //
                        0.1f, 0.6f, 0.3f,  //
                        0.2f, 0.5f, 0.3f,  //
                        0.1f, 0.3f, 0.6f,  //
                        0.2f, 0.2f, 0.6f,  //
                        0.3f, 0.3f, 0.4f})
                .reshape({6, 3});
  p.labels = at::tensor(std::vector<int64_t>{0, 0, 1, 1, 2, 2});
  p.indices = at::tensor(std::vector<int64_t>{5, 4, 3, 1, 0, 2});
  p.loss = 0.75;
  return p;
}

std::vector<SampleInfo> six_infos() {
  std::vector<SampleInfo> s;
  for (int i = 0; i < 6; ++i) s.push_back({"text " + std::to_string(i), "img/" + std::to_string(i) + ".png", ""});
  return s;
}

json read_json(const fs::path& path) { return json::parse(test::read_file(path.string())); }

std::vector<json> read_jsonl(const fs::path& path) {
  std::istringstream in(test::read_file(path.string()));
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  return lines;
}

TEST(ReportTest, ReportJsonHoldsHandComputedMetrics) {
  TempDir dir;
  const auto m = write_split_report(dir.str(), "test", six_samples(), kLabels, six_infos());
  EXPECT_NEAR(m.accuracy, 4.0 / 6, 1e-9);

  const json r = read_json(dir.path() / "report.json");
  const json& t = r.at("test");
  EXPECT_EQ(t.at("count").get<int64_t>(), 6);
  EXPECT_DOUBLE_EQ(t.at("loss").get<double>(), 0.75);
  EXPECT_NEAR(t.at("accuracy").get<double>(), 4.0 / 6, 1e-9);
  EXPECT_NEAR(t.at("top_k").at("1").get<double>(), 4.0 / 6, 1e-9);
  EXPECT_NEAR(t.at("top_k").at("3").get<double>(), 1.0, 1e-9);
  EXPECT_NEAR(t.at("macro_f1").get<double>(), (2.0 / 3 + 0.5 + 0.8) / 3, 1e-9);
  EXPECT_NEAR(t.at("macro_precision").get<double>(), (1.0 + 0.5 + 2.0 / 3) / 3, 1e-9);
  EXPECT_NEAR(t.at("macro_recall").get<double>(), (0.5 + 0.5 + 1.0) / 3, 1e-9);
  EXPECT_NEAR(t.at("weighted_f1").get<double>(), (2.0 / 3 + 0.5 + 0.8) / 3, 1e-9);
  for (const auto& name : kLabels) {
    EXPECT_EQ(t.at("per_class").at(name).at("support").get<int64_t>(), 2) << name;
  }
  EXPECT_NEAR(t.at("per_class").at("greet").at("precision").get<double>(), 1.0, 1e-9);
  EXPECT_NEAR(t.at("per_class").at("greet").at("recall").get<double>(), 0.5, 1e-9);
  EXPECT_NEAR(t.at("per_class").at("cancel").at("f1").get<double>(), 0.8, 1e-9);
  EXPECT_EQ(t.at("confusion").at("labels").get<std::vector<std::string>>(), kLabels);
  const std::vector<std::vector<int64_t>> expected{{1, 1, 0}, {0, 1, 1}, {0, 0, 2}};
  EXPECT_EQ(t.at("confusion").at("matrix").get<std::vector<std::vector<int64_t>>>(), expected);
  EXPECT_TRUE(t.at("count").is_number_integer());
  // Written with a 2-space indent, and no temporary file left behind.
  EXPECT_NE(test::read_file((dir.path() / "report.json").string()).find("\n  \"test\""),
            std::string::npos);
  for (const auto& e : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  }
}

TEST(ReportTest, LaterSplitKeepsEarlierOnesAndRewritesItsOwn) {
  TempDir dir;
  write_split_report(dir.str(), "test", six_samples(), kLabels, six_infos());
  Predictions val = six_samples();
  val.probs = val.probs.slice(0, 0, 3);
  val.labels = val.labels.slice(0, 0, 3);
  val.indices = val.indices.slice(0, 0, 3);
  write_split_report(dir.str(), "val", val, kLabels, six_infos());

  json r = read_json(dir.path() / "report.json");
  ASSERT_TRUE(r.contains("test"));
  ASSERT_TRUE(r.contains("val"));
  EXPECT_EQ(r["test"]["count"].get<int64_t>(), 6);
  EXPECT_EQ(r["val"]["count"].get<int64_t>(), 3);
  EXPECT_NEAR(r["val"]["accuracy"].get<double>(), 2.0 / 3, 1e-9);

  write_split_report(dir.str(), "test", val, kLabels, six_infos());  // replaces test only
  r = read_json(dir.path() / "report.json");
  EXPECT_EQ(r["test"]["count"].get<int64_t>(), 3);
  EXPECT_EQ(r["val"]["count"].get<int64_t>(), 3);
}

TEST(ReportTest, MisclassifiedListsExactlyTheWrongSamples) {
  TempDir dir;
  write_split_report(dir.str(), "test", six_samples(), kLabels, six_infos());
  const auto lines = read_jsonl(dir.path() / "misclassified_test.jsonl");
  ASSERT_EQ(lines.size(), 2u);

  // Sorted by sample index: row 3 (index 1) first, then row 1 (index 4).
  EXPECT_EQ(lines[0]["index"].get<int64_t>(), 1);
  EXPECT_EQ(lines[0]["text"].get<std::string>(), "text 1");
  EXPECT_EQ(lines[0]["image"].get<std::string>(), "img/1.png");
  EXPECT_EQ(lines[0]["gold"].get<std::string>(), "order");
  ASSERT_EQ(lines[0]["top"].size(), 3u);
  EXPECT_EQ(lines[0]["top"][0]["label"].get<std::string>(), "cancel");
  EXPECT_EQ(lines[0]["top"][1]["label"].get<std::string>(), "order");
  EXPECT_EQ(lines[0]["top"][2]["label"].get<std::string>(), "greet");
  EXPECT_NEAR(lines[0]["top"][0]["prob"].get<double>(), 0.6, 1e-6);

  EXPECT_EQ(lines[1]["index"].get<int64_t>(), 4);
  EXPECT_EQ(lines[1]["text"].get<std::string>(), "text 4");
  EXPECT_EQ(lines[1]["image"].get<std::string>(), "img/4.png");
  EXPECT_EQ(lines[1]["gold"].get<std::string>(), "greet");
  std::vector<std::string> order;
  for (const auto& t : lines[1]["top"]) order.push_back(t["label"].get<std::string>());
  EXPECT_EQ(order, (std::vector<std::string>{"order", "cancel", "greet"}));
  for (const auto& line : lines) {
    for (size_t j = 1; j < line["top"].size(); ++j) {
      EXPECT_GE(line["top"][j - 1]["prob"].get<double>(), line["top"][j]["prob"].get<double>());
    }
  }
}

TEST(ReportTest, ListedTopAndMissingSampleInfos) {
  TempDir dir;
  SplitReportOptions options;
  options.listed_top = 1;
  options.plots = false;
  write_split_report(dir.str(), "test", six_samples(), kLabels, {}, options);
  const auto lines = read_jsonl(dir.path() / "misclassified_test.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["top"].size(), 1u);
  EXPECT_TRUE(lines[0]["text"].is_null());
  EXPECT_TRUE(lines[0]["image"].is_null());
  EXPECT_FALSE(fs::exists(dir.path() / "confusion_test.png"));
  EXPECT_FALSE(fs::exists(dir.path() / "confidence_test.png"));
}

TEST(ReportTest, PlotsAreWrittenAndDecode) {
  TempDir dir;
  write_split_report(dir.str(), "test", six_samples(), kLabels, six_infos());
  for (const char* name : {"confusion_test.png", "confidence_test.png"}) {
    const cv::Mat img = cv::imread((dir.path() / name).string());
    ASSERT_FALSE(img.empty()) << name;
    EXPECT_GT(img.cols, 100) << name;
    EXPECT_GT(img.rows, 100) << name;
  }
}

TEST(ReportTest, ConfusionPlotScalesTo150Classes) {
  TempDir dir;
  for (int k : {2, 12, 150}) {
    std::vector<std::string> names;
    std::vector<std::vector<int64_t>> confusion(k, std::vector<int64_t>(k, 0));
    for (int i = 0; i < k; ++i) {
      names.push_back("intent_" + std::to_string(i) + (i % 3 ? "" : "_with_a_long_name"));
      confusion[i][i] = 10 + i;
      confusion[i][(i + 1) % k] += 3;
    }
    const std::string path = (dir.path() / ("c" + std::to_string(k) + ".png")).string();
    draw_confusion_matrix(confusion, names, "k=" + std::to_string(k), path);
    const cv::Mat img = cv::imread(path);
    ASSERT_FALSE(img.empty()) << k;
    EXPECT_LT(img.cols, 2000) << k;
    EXPECT_LT(img.rows, 2000) << k;
  }
}

TEST(ReportTest, LearningCurveDrawsLossValidationAndLearningRate) {
  TempDir dir;
  LearningCurvePlot curve;
  for (int s = 1; s <= 40; ++s) {
    curve.steps.push_back(s);
    curve.train_loss.push_back(2.0 / s);
    curve.lr.push_back(s < 5 ? 1e-3 * s / 5 : 1e-3);
  }
  curve.epoch_steps = {20, 40};
  curve.val_loss = {0.3, 0.2};
  const auto path = (dir.path() / "learning_curve.png").string();
  draw_learning_curve(curve, "learning curve", path);
  const cv::Mat img = cv::imread(path);
  ASSERT_FALSE(img.empty());
  // Each series is drawn in its own colour (BGR): the training loss, the validation points,
  // the learning rate.
  auto pixels_of = [&](cv::Vec3b colour) {
    int n = 0;
    for (int y = 0; y < img.rows; ++y)
      for (int x = 0; x < img.cols; ++x) n += img.at<cv::Vec3b>(y, x) == colour;
    return n;
  };
  EXPECT_GT(pixels_of({180, 100, 30}), 100);
  EXPECT_GT(pixels_of({40, 120, 220}), 30);
  EXPECT_GT(pixels_of({40, 150, 40}), 100);
  // Series of different lengths are an error naming the file; no point is a plot that says so.
  curve.lr.pop_back();
  EXPECT_THROW(draw_learning_curve(curve, "t", path), Error);
  draw_learning_curve(LearningCurvePlot{}, "t", path);
  EXPECT_FALSE(cv::imread(path).empty());
}

TEST(ReportTest, PlotErrorsNameThePath) {
  TempDir dir;
  const std::string missing = (dir.path() / "no_such_dir" / "c.png").string();
  try {
    draw_confidence_histogram({0.9, 0.8}, {0.4}, "t", missing);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  EXPECT_THROW(draw_confusion_matrix({{1, 0}, {0, 1}}, {"a", "b", "c"}, "t",
                                     (dir.path() / "c.png").string()),
               Error);
}

TEST(ReportTest, TableListsEveryLabelAndTheAccuracy) {
  TempDir dir;
  const auto m = write_split_report(dir.str(), "test", six_samples(), kLabels, six_infos(),
                                    {{1, 3}, 3, false});
  const std::string table = format_metrics_table("test", m, kLabels);
  for (const auto& name : kLabels) EXPECT_NE(table.find(name), std::string::npos) << name;
  EXPECT_NE(table.find("test"), std::string::npos);
  EXPECT_NE(table.find("accuracy 0.6667"), std::string::npos) << table;
  EXPECT_NE(table.find("top-3 1.0000"), std::string::npos) << table;
  EXPECT_NE(table.find("0.6556"), std::string::npos) << table;  // macro F1
  // Aligned: every class row has the same length as the header row.
  std::istringstream in(table);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  size_t header = 0;
  while (header < lines.size() && lines[header].rfind("label", 0) != 0) ++header;
  ASSERT_LT(header + 4, lines.size()) << table;
  for (size_t i = header + 2; i < header + 5; ++i) {
    EXPECT_EQ(lines[i].size(), lines[header].size()) << table;
  }
}

TEST(ReportTest, EmptySplitWritesCountZeroAndNoPlots) {
  TempDir dir;
  // Stale plots of an earlier run must not survive next to a report that says count 0.
  dir.write("confusion_val.png", "stale");
  Predictions empty;
  empty.probs = at::zeros({0, 3});
  empty.labels = at::zeros({0}, at::kLong);
  empty.indices = at::zeros({0}, at::kLong);
  const auto m = write_split_report(dir.str(), "val", empty, kLabels, {});
  EXPECT_EQ(m.count, 0);
  const json r = read_json(dir.path() / "report.json");
  EXPECT_EQ(r["val"]["count"].get<int64_t>(), 0);
  EXPECT_EQ(r["val"]["accuracy"].get<double>(), 0.0);
  EXPECT_EQ(r["val"]["top_k"]["3"].get<double>(), 0.0);
  EXPECT_EQ(r["val"]["confusion"]["matrix"].size(), 3u);
  EXPECT_TRUE(fs::exists(dir.path() / "misclassified_val.jsonl"));
  EXPECT_TRUE(test::read_file((dir.path() / "misclassified_val.jsonl").string()).empty());
  EXPECT_FALSE(fs::exists(dir.path() / "confusion_val.png"));
  EXPECT_FALSE(fs::exists(dir.path() / "confidence_val.png"));
  EXPECT_NO_THROW(format_metrics_table("val", m, kLabels));

  // Undefined tensors count as an empty split too.
  EXPECT_EQ(write_split_report(dir.str(), "train", Predictions{}, kLabels, {}).count, 0);
}

TEST(ReportTest, UnwritableRunDirNamesIt) {
  TempDir dir;
  // A regular file where a directory is needed fails even for root.
  const std::string blocker = dir.write("blocker", "x");
  const std::string run_dir = blocker + "/run";
  try {
    write_split_report(run_dir, "test", six_samples(), kLabels, six_infos());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(run_dir), std::string::npos) << e.what();
  }
}

TEST(ReportTest, InconsistentInputsAndCorruptReportAreErrors) {
  TempDir dir;
  EXPECT_THROW(write_split_report(dir.str(), "test", six_samples(), {"a", "b"}, {}), Error);
  EXPECT_THROW(write_split_report(dir.str(), "test", six_samples(), {"a", "a", "b"}, {}), Error);
  EXPECT_THROW(write_split_report(dir.str(), "../x", six_samples(), kLabels, {}), Error);
  std::vector<SampleInfo> too_few(3);
  EXPECT_THROW(write_split_report(dir.str(), "test", six_samples(), kLabels, too_few), Error);
  Predictions bad = six_samples();
  bad.labels = at::tensor(std::vector<int64_t>{0, 0, 1, 1, 2, 7});
  EXPECT_THROW(write_split_report(dir.str(), "test", bad, kLabels, {}), Error);

  const std::string report = dir.write("report.json", "{ not json");
  try {
    write_split_report(dir.str(), "test", six_samples(), kLabels, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(report), std::string::npos) << e.what();
  }
  EXPECT_EQ(test::read_file(report), "{ not json");  // left untouched
}

}  // namespace
}  // namespace mmintent
