// End-to-end tests of the `mmintent` CLI: the real executable (MMINTENT_CLI) trains, evaluates
// and predicts on a small generated multimodal fixture; bad configs and data give the documented
// exit codes (0 ok, 2 usage, 3 config, 4 data, 5 checkpoint, 1 other) and one-line errors.
// Everything is written under a TempDir; the CLI runs with that dir as its working directory.

#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mmintent/inference/predictor.h"
#include "support/cli.h"
#include "support/fixture.h"
#include "support/support.h"

#ifndef MMINTENT_CLI
#error "MMINTENT_CLI must name the built mmintent executable"
#endif

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::CliResult;
using test::TempDir;

// ---- The fixture is support/fixture.h's: 4 intents = 2 actions (from the text) x 2 image
// kinds (from the image). ----


/// Replaces the first occurrence of `from` in `text` by `to` (which must exist).
std::string replace_once(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "'" << from << "' not in the config";
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

/// 1-based line of the first occurrence of `needle` in `text`.
int line_of(const std::string& text, const std::string& needle) {
  const auto at = text.find(needle);
  if (at == std::string::npos) return 0;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(at), '\n'));
}

/// The generated fixture and a helper to run the CLI in it.
class EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path();
    train_manifest_ = test::write_fixture_split(root_, "train", 160, 1);
    val_manifest_ = test::write_fixture_split(root_, "val", 40, 2);
    test_manifest_ = test::write_fixture_split(root_, "test", 40, 3);
    run_dir_ = (root_ / "runs" / "main").string();
    config_ = write_config("config.yaml", test::fixture_config(run_dir_));
  }

  std::string write_config(const std::string& name, const std::string& text) const {
    return dir_.write(name, text);
  }

  /// Runs `mmintent ARGS` with the temp dir as working directory; logs go to cli_logs/.
  CliResult cli(const std::vector<std::string>& args) const {
    return test::run_cli(MMINTENT_CLI, args, root_, {}, root_ / "cli_logs");
  }

  /// Trains the base config into run_dir_ and checks that it succeeded.
  void train_base() {
    const auto r = cli({"train", config_});
    ASSERT_EQ(r.code, 0) << r.dump();
  }

  static json read_json(const fs::path& path) {
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << path;
    return json::parse(in);
  }

  static std::vector<std::string> lines_of(const fs::path& path) {
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) out.push_back(line);
    }
    return out;
  }

  /// (path -> last write time) of every file under `dir`.
  static std::map<std::string, fs::file_time_type> snapshot(const fs::path& dir) {
    std::map<std::string, fs::file_time_type> out;
    if (!fs::exists(dir)) return out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (e.is_regular_file()) out[e.path().string()] = e.last_write_time();
    }
    return out;
  }

  /// Checks a failing run: the exit code and one "mmintent: error:" line containing `parts`.
  static void expect_failure(const CliResult& r, int code, const std::vector<std::string>& parts) {
    EXPECT_EQ(r.code, code) << r.dump();
    const auto line = r.error_line();
    ASSERT_FALSE(line.empty()) << "no 'mmintent: error:' line\n" << r.dump();
    for (const auto& p : parts)
      EXPECT_NE(line.find(p), std::string::npos) << "'" << p << "' not in: " << line;
  }

  TempDir dir_;
  fs::path root_;
  std::string train_manifest_, val_manifest_, test_manifest_, run_dir_, config_;
};

// ---- Training, evaluation, prediction. ----

TEST_F(EndToEndTest, TrainWritesTheRunDirectoryAndLearns) {
  const auto r = cli({"train", config_});
  ASSERT_EQ(r.code, 0) << r.dump();
  const fs::path run(run_dir_);
  for (const char* f :
       {"config.yaml", "labels.json", "tokenizer.model", "best.pt", "last.pt", "model.pt",
        "metrics.jsonl", "report.json", "confusion_test.png", "confidence_test.png",
        "misclassified_test.jsonl", "confusion_val.png", "train.log", "steps.jsonl",
        "learning_curve.png", "report.html"}) {
    EXPECT_TRUE(fs::is_regular_file(run / f)) << f << " missing from " << run_dir_;
  }
  EXPECT_NE(r.out.find("run directory: "), std::string::npos) << r.dump();

  // One metrics line per epoch, each a JSON object.
  const auto metrics = lines_of(run / "metrics.jsonl");
  EXPECT_EQ(metrics.size(), 6u);
  for (const auto& line : metrics) EXPECT_TRUE(json::parse(line).is_object()) << line;

  const auto labels = read_json(run / "labels.json");
  EXPECT_EQ(labels, json({"refund_left", "refund_right", "stock_left", "stock_right"}));

  const auto report = read_json(run / "report.json");
  ASSERT_TRUE(report.contains("test")) << report.dump();
  ASSERT_TRUE(report.contains("val")) << report.dump();
  const double test_acc = report["test"]["accuracy"].get<double>();
  const double val_acc = report["val"]["accuracy"].get<double>();
  ASSERT_TRUE(report["test"].contains("macro_f1"));
  EXPECT_EQ(report["test"]["count"].get<int64_t>(), 40);
  // Chance is 0.25; the fixture is easy (text -> action, bright half -> kind).
  EXPECT_GE(test_acc, 0.75) << report.dump(2);
  EXPECT_GE(val_acc, 0.75) << report.dump(2);
  EXPECT_GE(report["test"]["macro_f1"].get<double>(), 0.6);

  // Every misclassified line is JSON naming the gold label.
  for (const auto& line : lines_of(run / "misclassified_test.jsonl")) {
    const auto j = json::parse(line);
    EXPECT_TRUE(j.contains("gold")) << line;
  }
  // Nothing was written next to the CLI logs except the run and the fixture.
  for (const auto& e : fs::directory_iterator(root_)) {
    const auto name = e.path().filename().string();
    EXPECT_TRUE(name == "data" || name == "runs" || name == "cli_logs" || name == "config.yaml")
        << name;
  }
}

TEST_F(EndToEndTest, EvalReproducesTheTestAccuracyAndTakesAManifestPath) {
  train_base();
  const fs::path run(run_dir_);
  const auto before = read_json(run / "report.json");
  const double test_acc = before["test"]["accuracy"].get<double>();

  const auto r = cli({"eval", run_dir_, "--split", "test"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto after = read_json(run / "report.json");
  EXPECT_EQ(after["test"]["accuracy"].get<double>(), test_acc);
  EXPECT_EQ(after["test"]["macro_f1"].get<double>(), before["test"]["macro_f1"].get<double>());
  std::ostringstream printed;
  printed << "accuracy: " << std::fixed << std::setprecision(4) << test_acc;
  EXPECT_NE(r.out.find(printed.str()), std::string::npos) << r.dump();

  // A manifest path: a copy of the test split under another name gets its own report entry.
  const auto extra = (root_ / "data" / "extra.jsonl").string();
  fs::copy_file(test_manifest_, extra);
  const auto f = cli({"eval", run_dir_, "--split", extra});
  ASSERT_EQ(f.code, 0) << f.dump();
  const auto with_extra = read_json(run / "report.json");
  ASSERT_TRUE(with_extra.contains("extra")) << with_extra.dump();
  EXPECT_EQ(with_extra["extra"]["accuracy"].get<double>(), test_acc);
  EXPECT_EQ(with_extra["extra"]["count"].get<int64_t>(), 40);

  const auto v = cli({"eval", run_dir_, "--split", "val"});
  EXPECT_EQ(v.code, 0) << v.dump();
  EXPECT_EQ(read_json(run / "report.json")["val"]["accuracy"].get<double>(),
            before["val"]["accuracy"].get<double>());

  // A manifest that does not exist: a data error naming it.
  const auto missing = cli({"eval", run_dir_, "--split", "data/nope.jsonl"});
  expect_failure(missing, 4, {"nope.jsonl"});
}

TEST_F(EndToEndTest, EvalPerturbMeasuresNoisyTextsTheSameWayEachTime) {
  train_base();
  auto r = cli({"eval", run_dir_, "--perturb", "typos:0.5", "--perturb", "deletion:0.5"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(r.out.find("test with typos:0.5: accuracy"), std::string::npos) << r.dump();
  const auto report = read_json(fs::path(run_dir_) / "report.json")["test"];
  const auto robustness = report["robustness"];
  for (const char* noise : {"typos:0.5", "deletion:0.5"}) {
    ASSERT_TRUE(robustness.contains(noise)) << report.dump();
    const double accuracy = robustness[noise]["accuracy"].get<double>();
    EXPECT_GE(accuracy, 0.0);
    EXPECT_LE(accuracy, 1.0);
    EXPECT_NEAR(robustness[noise]["accuracy_drop"].get<double>(), report["accuracy"].get<double>() - accuracy, 1e-12);
  }
  // The noise is drawn from the run's seed: a second evaluation gives the same figures.
  r = cli({"eval", run_dir_, "--perturb", "typos:0.5", "--perturb", "deletion:0.5"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_EQ(read_json(fs::path(run_dir_) / "report.json")["test"]["robustness"], robustness);
  // A noise that is not one of the three: a usage error naming the forms.
  r = cli({"eval", run_dir_, "--perturb", "typo:0.1"});
  EXPECT_EQ(r.code, 2) << r.dump();
  EXPECT_NE(r.err.find("typos:R, deletion:R or swap:R"), std::string::npos) << r.dump();
}

TEST_F(EndToEndTest, PredictPrintsIntentsAndWritesManifestPredictions) {
  train_base();
  // An easy sample: a refund text with a bright-left image.
  std::mt19937 rng(99);
  const auto image = (root_ / "easy.png").string();
  ASSERT_TRUE(cv::imwrite(image, test::fixture_image(0, rng)));
  const auto r =
      cli({"predict", run_dir_, "--text", "please refund my purchase", "--image", image});
  ASSERT_EQ(r.code, 0) << r.dump();
  std::istringstream in(r.out);
  std::vector<std::pair<std::string, double>> scores;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string intent;
    double p = -1;
    if (ls >> intent >> p) scores.emplace_back(intent, p);
  }
  ASSERT_EQ(scores.size(), 3u) << r.dump();  // --top-k defaults to 3
  EXPECT_EQ(scores[0].first, "refund_left") << r.dump();
  double sum = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    EXPECT_GE(scores[i].second, 0.0);
    EXPECT_LE(scores[i].second, 1.0);
    if (i > 0) {
      EXPECT_LE(scores[i].second, scores[i - 1].second) << "not sorted";
    }
    sum += scores[i].second;
  }
  EXPECT_LE(sum, 1.0 + 1e-3) << r.dump();
  EXPECT_GT(scores[0].second, 0.5) << r.dump();

  // --top-k 4 lists every intent, summing to ~1.
  const auto all = cli({"predict", run_dir_, "--text", "do you have this in stock", "--image",
                        image, "--top-k", "4"});
  ASSERT_EQ(all.code, 0) << all.dump();
  std::istringstream in4(all.out);
  double sum4 = 0;
  int n4 = 0;
  std::string first;
  for (std::string line; std::getline(in4, line);) {
    std::istringstream ls(line);
    std::string intent;
    double p;
    if (ls >> intent >> p) {
      if (n4++ == 0) first = intent;
      sum4 += p;
    }
  }
  EXPECT_EQ(n4, 4) << all.dump();
  EXPECT_NEAR(sum4, 1.0, 2e-3) << all.dump();
  EXPECT_EQ(first, "stock_left") << all.dump();

  // A whole manifest: one JSON line per record.
  const auto out = (root_ / "predictions.jsonl").string();
  const auto m = cli({"predict", run_dir_, "--manifest", test_manifest_, "--out", out});
  ASSERT_EQ(m.code, 0) << m.dump();
  EXPECT_NE(m.out.find("wrote 40 predictions"), std::string::npos) << m.dump();
  const auto lines = lines_of(out);
  ASSERT_EQ(lines.size(), 40u);
  int correct = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto j = json::parse(lines[i]);
    EXPECT_EQ(j["line"].get<int64_t>(), static_cast<int64_t>(i) + 1);
    ASSERT_TRUE(j["top"].is_array());
    ASSERT_EQ(j["top"].size(), 3u);
    double s = 0;
    for (const auto& t : j["top"]) s += t["probability"].get<double>();
    EXPECT_LE(s, 1.0 + 1e-6);
    if (j["top"][0]["intent"] == j["label"]) ++correct;
  }
  EXPECT_GE(correct, 30) << "predict --manifest should match the trained accuracy";

  // The same records through a pipe (--manifest -): the same predictions, on standard output.
  // Relative image paths resolve against the working directory: run from the manifest's folder.
  const auto folder = fs::path(test_manifest_).parent_path();
  const std::string exe = test::shell_quote(MMINTENT_CLI) + " predict " + test::shell_quote(run_dir_) + " --manifest -";
  const auto piped = test::run_cli("/bin/sh", {"-c", exe + " < " + test::shell_quote(test_manifest_)}, folder);
  ASSERT_EQ(piped.code, 0) << piped.dump();
  std::vector<json> streamed;
  {
    std::istringstream in(piped.out);
    for (std::string l; std::getline(in, l);) streamed.push_back(json::parse(l));
  }
  ASSERT_EQ(streamed.size(), lines.size()) << piped.dump();
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto j = json::parse(lines[i]);
    EXPECT_EQ(streamed[i]["line"], j["line"]);
    EXPECT_EQ(streamed[i]["decision"], j["decision"]);
    ASSERT_EQ(streamed[i]["top"].size(), j["top"].size());
    for (size_t k = 0; k < j["top"].size(); ++k) {
      EXPECT_EQ(streamed[i]["top"][k]["intent"], j["top"][k]["intent"]);
      EXPECT_NEAR(streamed[i]["top"][k]["probability"].get<double>(), j["top"][k]["probability"].get<double>(), 1e-5);
    }
  }
  // Each line is answered as it arrives: the writer sends the second record only after the
  // answer to the first is out (a reader that waited for the end of input would hang here).
  {
    std::ifstream in(test_manifest_);
    std::string first, second;
    std::getline(in, first);
    std::getline(in, second);
    const auto answers = (root_ / "interactive.jsonl").string();
    const auto r = test::run_cli("/bin/sh", {"-c", "{ printf '%s\\n' " + test::shell_quote(first) +
                                                       "; i=0; while [ ! -s " + test::shell_quote(answers) +
                                                       " ]; do i=$((i+1)); [ $i -gt 600 ] && echo TIMEOUT >&2 && break; sleep 0.1; done; printf '%s\\n' " +
                                                       test::shell_quote(second) + "; } | " + exe + " > " + test::shell_quote(answers)},
                                 folder);
    ASSERT_EQ(r.code, 0) << r.dump();
    EXPECT_EQ(r.err.find("TIMEOUT"), std::string::npos) << "the first record was not answered before the input ended";
    EXPECT_EQ(lines_of(answers).size(), 2u);
  }
  // A bad record names <stdin> and its line; the records before it were answered.
  const auto bad = test::run_cli("/bin/sh", {"-c", "{ head -n 2 " + test::shell_quote(test_manifest_) + "; echo '{\"text\": 5}'; } | " + exe}, folder);
  EXPECT_NE(bad.code, 0) << bad.dump();
  EXPECT_NE(bad.err.find("<stdin>:3"), std::string::npos) << bad.dump();
  EXPECT_EQ(std::count(bad.out.begin(), bad.out.end(), '\n'), 2) << bad.dump();
  // --out - writes a manifest's predictions to standard output.
  const auto to_stdout = cli({"predict", run_dir_, "--manifest", test_manifest_, "--out", "-"});
  ASSERT_EQ(to_stdout.code, 0) << to_stdout.dump();
  EXPECT_EQ(std::count(to_stdout.out.begin(), to_stdout.out.end(), '\n'), 40) << to_stdout.dump();

  // --manifest without --out is a usage error; no input at all too.
  expect_failure(cli({"predict", run_dir_, "--manifest", test_manifest_}), 2, {"--out"});
  expect_failure(cli({"predict", run_dir_}), 2, {"--text"});
}

TEST_F(EndToEndTest, LogLevelQuietsTheConsoleButNotTheRunsLog) {
  const auto quiet = (root_ / "runs" / "quiet").string();
  const auto r = cli({"train", config_, "--log-level", "warn", "train.epochs=1", "output.dir=" + quiet});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_EQ(r.err.find(" info "), std::string::npos) << "info lines on the console: " << r.dump();
  const auto log = test::read_file((fs::path(quiet) / "train.log").string());
  EXPECT_NE(log.find(" info [trainer] epoch 1"), std::string::npos) << "the run's log lost its info lines: " << log;
  // A level that does not exist is a usage error naming the accepted ones.
  const auto bad = test::run_cli(MMINTENT_CLI, {"--log-level", "loud", "config", config_}, root_);
  EXPECT_EQ(bad.code, 2) << bad.dump();
  EXPECT_NE(bad.err.find("debug,info,warn,error"), std::string::npos) << bad.dump();
}

TEST_F(EndToEndTest, CommandLineOverridesTakeEffect) {
  const auto other = (root_ / "runs" / "override").string();
  const auto r = cli(
      {"train", config_, "train.epochs=1", "output.dir=" + other, "model.text_encoder.type=lstm"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_FALSE(fs::exists(run_dir_)) << "the config's output.dir must not be used";
  const auto saved = test::read_file((fs::path(other) / "config.yaml").string());
  EXPECT_NE(saved.find("epochs: 1\n"), std::string::npos) << saved;
  EXPECT_EQ(saved.find("epochs: 6"), std::string::npos) << saved;
  EXPECT_TRUE(saved.find("type: \"lstm\"") != std::string::npos ||
              saved.find("type: lstm") != std::string::npos)
      << saved;
  EXPECT_NE(saved.find(other), std::string::npos) << saved;
  EXPECT_EQ(lines_of(fs::path(other) / "metrics.jsonl").size(), 1u);

  // A bad override names itself.
  expect_failure(cli({"train", config_, "train.epochs=0", "output.dir=" + other + "2"}), 3,
                 {"train.epochs=0", "train.epochs"});
  expect_failure(cli({"train", config_, "train.epochz=2"}), 3, {"train.epochz"});
}

TEST_F(EndToEndTest, TrainingIntoANonEmptyRunDirFailsWithoutWriting) {
  const auto dir = (root_ / "runs" / "short").string();
  const auto first = cli({"train", config_, "train.epochs=1", "output.dir=" + dir});
  ASSERT_EQ(first.code, 0) << first.dump();
  const auto before = snapshot(dir);
  ASSERT_FALSE(before.empty());

  const auto again = cli({"train", config_, "train.epochs=1", "output.dir=" + dir});
  expect_failure(again, 3, {"output.dir", dir});
  EXPECT_EQ(snapshot(dir), before) << "a refused run must not touch the run directory";

  // With overwrite it is allowed.
  const auto over =
      cli({"train", config_, "train.epochs=1", "output.dir=" + dir, "output.overwrite=true"});
  EXPECT_EQ(over.code, 0) << over.dump();
}

TEST_F(EndToEndTest, OutputNumberedWritesANewDirectoryInsteadOfRefusing) {
  const auto dir = (root_ / "runs" / "numbered").string();
  const auto first = cli({"train", config_, "train.epochs=1", "output.dir=" + dir, "output.numbered=true"});
  ASSERT_EQ(first.code, 0) << first.dump();
  EXPECT_NE(first.out.find("run directory: " + dir + "\n"), std::string::npos);
  const auto before = snapshot(dir);
  const auto second = cli({"train", config_, "train.epochs=1", "output.dir=" + dir, "output.numbered=true"});
  ASSERT_EQ(second.code, 0) << second.dump();
  EXPECT_NE(second.out.find("run directory: " + dir + "-2\n"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir + "-2/model.pt"));
  EXPECT_EQ(snapshot(dir), before) << "the first run must be left as it was";
}

TEST_F(EndToEndTest, TheSmallestConfigTrainsAndSaysWhatItChose) {
  // data.train alone (the README's "your own data"): defaults adapt to the missing splits.
  const auto smallest = write_config("smallest.yaml", "data:\n  train: " + train_manifest_ + "\n");
  const auto r = cli({"train", smallest, "train.epochs=1"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto run = root_ / "runs" / "default";  // output.dir's default, under the working dir
  EXPECT_TRUE(fs::exists(run / "model.pt")) << r.dump();
  const auto log = test::read_file((run / "train.log").string());
  for (const char* said : {"no data.val: early stopping is off", "no report is written", "uncalibrated"}) {
    EXPECT_NE(log.find(said), std::string::npos) << said << "\n" << log;
  }
  // The run is usable: evaluated and asked afterwards like any other.
  const auto e = cli({"eval", run.string(), "--split", test_manifest_});
  EXPECT_EQ(e.code, 0) << e.dump();
}

TEST_F(EndToEndTest, ARunDirectoryThatCannotBeMadeIsRefusedBeforeAnyWork) {
  // Under a regular file: refused at once, before the tokenizer is trained.
  const auto file = root_ / "a_file";
  std::ofstream(file) << "x";
  const auto under_file = (file / "run").string();
  const auto r = cli({"train", config_, "output.dir=" + under_file});
  expect_failure(r, 3, {"output.dir", under_file, "is not a directory"});
  EXPECT_EQ(r.out.find("tokenizer"), std::string::npos) << r.dump();
  // A file system that refuses new directories even to root: refused before training starts.
  const auto in_proc = "/proc/mmintent_test_run";
  const auto p = cli({"train", config_, std::string("output.dir=") + in_proc});
  expect_failure(p, 3, {"output.dir", in_proc});
  EXPECT_FALSE(fs::exists(in_proc));
}

TEST_F(EndToEndTest, DivergingTrainingStopsWithExitCode6NamingTheStep) {
  const auto dir = (root_ / "runs" / "diverge").string();
  const auto r = cli({"train", config_, "train.epochs=2", "train.optimizer.lr=1e30",
                      "train.scheduler.warmup_steps=0", "output.dir=" + dir});
  expect_failure(r, 6, {"training diverged", "at epoch 1, batch ", "optimizer step"});
  EXPECT_FALSE(fs::exists(fs::path(dir) / "model.pt"));
  EXPECT_FALSE(fs::exists(fs::path(dir) / "report.json"));
}

TEST_F(EndToEndTest, ResumeAutoContinuesAFinishedRun) {
  const auto dir = (root_ / "runs" / "resume").string();
  const auto first = cli({"train", config_, "train.epochs=2", "output.dir=" + dir});
  ASSERT_EQ(first.code, 0) << first.dump();
  ASSERT_EQ(lines_of(fs::path(dir) / "metrics.jsonl").size(), 2u);

  // The same epochs: nothing left to train, evaluation still runs.
  const auto same =
      cli({"train", config_, "train.epochs=2", "output.dir=" + dir, "--resume", "auto"});
  ASSERT_EQ(same.code, 0) << same.dump();
  EXPECT_EQ(lines_of(fs::path(dir) / "metrics.jsonl").size(), 2u);

  // More epochs: training continues from epoch 3.
  const auto more =
      cli({"train", config_, "train.epochs=3", "output.dir=" + dir, "--resume", "auto"});
  ASSERT_EQ(more.code, 0) << more.dump();
  const auto metrics = lines_of(fs::path(dir) / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);
  EXPECT_EQ(json::parse(metrics[2])["epoch"].get<int64_t>(), 3) << metrics[2];
  EXPECT_TRUE(read_json(fs::path(dir) / "report.json").contains("test"));

  // Resuming from a checkpoint that does not exist is a checkpoint error.
  const auto bad = cli({"train", config_, "train.epochs=3", "output.dir=" + dir, "--resume",
                        (root_ / "missing.pt").string()});
  EXPECT_EQ(bad.code, 5) << bad.dump();
  EXPECT_NE(bad.error_line().find("missing.pt"), std::string::npos) << bad.dump();
}

TEST_F(EndToEndTest, AdversarialTrainingWithTextAugmentationIsDeterministic) {
  // FGM on the text embeddings and the images, noisy training texts: two runs of the same seed
  // give the same learning curve and metrics, and the run still learns.
  const std::vector<std::string> settings{
      "train.epochs=2", "train.adversarial.method=fgm", "train.adversarial.epsilon=0.5",
      "data.augment.enabled=true", "data.augment.text.typos=0.2", "data.augment.text.swap=0.1",
      "data.augment.text.token_dropout=0.1"};
  std::vector<std::vector<json>> metrics, steps;
  for (const char* name : {"adv1", "adv2"}) {
    const auto dir = (root_ / "runs" / name).string();
    auto args = std::vector<std::string>{"train", config_, "output.dir=" + dir};
    args.insert(args.end(), settings.begin(), settings.end());
    const auto r = cli(args);
    ASSERT_EQ(r.code, 0) << r.dump();
    const auto without_times = [](const std::vector<std::string>& lines) {
      std::vector<json> out;
      for (const auto& line : lines) {
        auto j = json::parse(line);
        for (const char* key : {"seconds", "time", "elapsed"}) j.erase(key);
        out.push_back(j);
      }
      return out;
    };
    metrics.push_back(without_times(lines_of(fs::path(dir) / "metrics.jsonl")));
    steps.push_back(without_times(lines_of(fs::path(dir) / "steps.jsonl")));
    const auto saved = test::read_file((fs::path(dir) / "config.yaml").string());
    EXPECT_NE(saved.find("method: \"fgm\""), std::string::npos) << saved;
    EXPECT_NE(saved.find("token_dropout: 0.1"), std::string::npos);
  }
  ASSERT_EQ(metrics[0].size(), 2u);
  EXPECT_EQ(metrics[0], metrics[1]);
  ASSERT_FALSE(steps[0].empty());
  EXPECT_EQ(steps[0], steps[1]);
  EXPECT_LT(metrics[0][1]["train.loss"].get<double>(), metrics[0][0]["train.loss"].get<double>() + 1e-9)
      << metrics[0][1].dump();
}

TEST_F(EndToEndTest, SavedConfigCanBeFedBack) {
  const auto first_dir = (root_ / "runs" / "first").string();
  const auto first = cli({"train", config_, "train.epochs=1", "output.dir=" + first_dir});
  ASSERT_EQ(first.code, 0) << first.dump();
  const auto saved = (fs::path(first_dir) / "config.yaml").string();
  const auto second_dir = (root_ / "runs" / "second").string();
  const auto again = cli({"train", saved, "output.dir=" + second_dir});
  ASSERT_EQ(again.code, 0) << again.dump();
  EXPECT_TRUE(fs::is_regular_file(fs::path(second_dir) / "model.pt"));
  EXPECT_EQ(lines_of(fs::path(second_dir) / "metrics.jsonl").size(), 1u);
  // The effective config of the second run equals the first's apart from output.dir.
  auto a = test::read_file(saved),
       b = test::read_file((fs::path(second_dir) / "config.yaml").string());
  a = replace_once(a, first_dir, "<dir>");
  b = replace_once(b, second_dir, "<dir>");
  EXPECT_EQ(a, b);
  // `mmintent config` prints the same effective config.
  const auto shown = cli({"config", saved});
  ASSERT_EQ(shown.code, 0) << shown.dump();
  EXPECT_EQ(shown.out, test::read_file(saved));
}

// ---- Bad configs and data: exit codes and messages. ----

TEST_F(EndToEndTest, UnknownKeyIsAConfigErrorNamingKeyAndLine) {
  const auto bad = replace_once(test::fixture_config(run_dir_), "  epochs: 6", "  epochz: 6");
  const auto path = write_config("bad_key.yaml", bad);
  const int line = line_of(bad, "epochz");
  const auto r = cli({"train", path});
  expect_failure(r, 3, {"bad_key.yaml", ":" + std::to_string(line), "train.epochz"});
  EXPECT_FALSE(fs::exists(run_dir_)) << "nothing may be written for a bad config";
}

TEST_F(EndToEndTest, WrongTypeIsAConfigError) {
  const auto bad = replace_once(test::fixture_config(run_dir_), "  epochs: 6", "  epochs: many");
  const auto path = write_config("bad_type.yaml", bad);
  const auto r = cli({"train", path});
  expect_failure(r, 3,
                 {"bad_type.yaml", ":" + std::to_string(line_of(bad, "epochs: many")),
                  "train.epochs", "integer"});
  EXPECT_FALSE(fs::exists(run_dir_));
}

TEST_F(EndToEndTest, OutOfRangeValueIsAConfigError) {
  const auto bad = replace_once(test::fixture_config(run_dir_), "    channels: 1", "    channels: 5");
  const auto path = write_config("bad_range.yaml", bad);
  const auto r = cli({"train", path});
  expect_failure(r, 3,
                 {"bad_range.yaml", ":" + std::to_string(line_of(bad, "channels: 5")),
                  "data.image.channels", "5"});
  EXPECT_FALSE(fs::exists(run_dir_));
}

TEST_F(EndToEndTest, MissingManifestIsAConfigError) {
  const auto bad =
      replace_once(test::fixture_config(run_dir_), "test: data/test.jsonl", "test: data/absent.jsonl");
  const auto path = write_config("bad_manifest.yaml", bad);
  const auto r = cli({"train", path});
  expect_failure(r, 3, {"bad_manifest.yaml", "data.test", "absent.jsonl"});
  EXPECT_FALSE(fs::exists(run_dir_));
}

TEST_F(EndToEndTest, MalformedYamlIsAConfigError) {
  const auto bad = replace_once(test::fixture_config(run_dir_), "    mean: [0.5]", "    mean: [0.5");
  const auto path = write_config("bad_yaml.yaml", bad);
  const auto r = cli({"train", path});
  expect_failure(r, 3, {"bad_yaml.yaml", "YAML"});
  EXPECT_FALSE(fs::exists(run_dir_));
  // A config file that does not exist: a config error like any other (not a usage error).
  EXPECT_EQ(cli({"train", (root_ / "nope.yaml").string()}).code, 3);
}

TEST_F(EndToEndTest, ManifestLineThatIsNotJsonIsADataError) {
  auto text = test::read_file(train_manifest_);
  // Line 5 becomes invalid JSON.
  size_t at = 0;
  for (int i = 0; i < 4; ++i) at = text.find('\n', at) + 1;
  text.insert(at, "{\"text\": \"broken\", \"image\": \n");
  std::ofstream(train_manifest_, std::ios::trunc) << text;
  const auto r = cli({"train", config_});
  expect_failure(r, 4, {"train.jsonl:5", "JSON"});
  EXPECT_FALSE(fs::exists(run_dir_)) << "nothing may be written for bad data";
}

TEST_F(EndToEndTest, UnknownLabelInValIsADataError) {
  auto text = test::read_file(val_manifest_);
  // Line 3 gets a label the training split never had.
  const auto j =
      json{{"text", "please refund my purchase"}, {"image", "img/val_0.png"}, {"label", "mystery"}};
  size_t at = 0;
  for (int i = 0; i < 2; ++i) at = text.find('\n', at) + 1;
  text.insert(at, j.dump() + "\n");
  std::ofstream(val_manifest_, std::ios::trunc) << text;
  const auto r = cli({"train", config_});
  expect_failure(r, 4, {"val.jsonl:3", "mystery"});
  // Nothing is written before the data has been checked (labels included).
  std::string left;
  if (fs::exists(run_dir_)) {
    for (const auto& e : fs::directory_iterator(run_dir_))
      left += " " + e.path().filename().string();
  }
  EXPECT_TRUE(left.empty()) << "a run refused for bad data left files in " << run_dir_ << ":"
                            << left;

  // With unknown_labels: skip the sample is left out and training succeeds.
  const auto skip = cli({"train", config_, "data.unknown_labels=skip", "train.epochs=1",
                         "output.dir=" + (root_ / "runs" / "skip").string()});
  EXPECT_EQ(skip.code, 0) << skip.dump();
  EXPECT_NE(skip.err.find("val.jsonl:3"), std::string::npos) << "the skipped sample is reported\n"
                                                             << skip.dump();
}

// ---- Interruption. ----

TEST_F(EndToEndTest, SigintKeepsTheLastEpochAndResumeFinishes) {
  const auto run = (root_ / "runs" / "sigint").string();
  // Start training, wait for the first epoch's metrics line, send SIGINT, collect the status.
  test::CliProcess p(MMINTENT_CLI,
                     {"train", config_, "train.epochs=40", "train.early_stopping.enabled=false",
                      "output.dir=" + run},
                     root_, {}, root_ / "cli_logs");
  const auto metrics = fs::path(run) / "metrics.jsonl";
  for (int i = 0; i < 600; ++i) {
    std::error_code ec;
    const auto size = fs::file_size(metrics, ec);
    if (!ec && size > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  p.kill(SIGINT);
  const auto interrupted = p.wait();
  EXPECT_EQ(interrupted.code, 130) << interrupted.dump();
  EXPECT_NE(interrupted.err.find("interrupted during epoch"), std::string::npos)
      << interrupted.dump();
  EXPECT_TRUE(fs::exists(fs::path(run) / "last.pt"));
  const auto done = lines_of(fs::path(run) / "metrics.jsonl").size();
  EXPECT_GE(done, 1u);
  EXPECT_LT(done, 40u);
  const auto r = cli({"train", config_, "train.epochs=40", "train.early_stopping.enabled=false",
                      "output.dir=" + run, "--resume", "auto"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_EQ(lines_of(fs::path(run) / "metrics.jsonl").size(), 40u);
}

// ---- Out-of-scope samples. ----

/// Appends `n` out-of-scope samples (label "oos": off-topic texts, noise images) to a manifest.
void append_oos(const std::string& manifest, const fs::path& data_dir, const std::string& split,
                int n, unsigned seed) {
  static const std::vector<std::string> kOffTopic{
      "what is the weather on mars", "tell me a joke about cats", "who won the football game",
      "how tall is the eiffel tower", "play some jazz music", "what time is it in tokyo"};
  std::mt19937 rng(seed);
  std::ofstream out(manifest, std::ios::app);
  for (int i = 0; i < n; ++i) {
    cv::Mat noise(16, 16, CV_8UC1);
    cv::randu(noise, 0, 255);
    const std::string image = "img/" + split + "_oos_" + std::to_string(i) + ".png";
    EXPECT_TRUE(cv::imwrite((data_dir / image).string(), noise));
    out << json{{"text", kOffTopic[rng() % kOffTopic.size()]}, {"image", image}, {"label", "oos"}}.dump()
        << "\n";
  }
}

TEST_F(EndToEndTest, OutOfScopeAsAClassAndByAThresholdChosenOnVal) {
  append_oos(train_manifest_, root_ / "data", "train", 40, 11);
  append_oos(val_manifest_, root_ / "data", "val", 10, 12);
  append_oos(test_manifest_, root_ / "data", "test", 10, 13);

  const auto class_dir = (root_ / "runs" / "oos_class").string();
  auto r = cli({"train", config_, "oos.label=oos", "output.dir=" + class_dir});
  ASSERT_EQ(r.code, 0) << r.dump();
  auto oos = read_json(fs::path(class_dir) / "report.json")["test"]["oos"];
  EXPECT_EQ(oos["method"], "class");
  EXPECT_EQ(oos["in_scope_count"], 40);
  EXPECT_EQ(oos["oos_count"], 10);
  EXPECT_GE(oos["in_scope_accuracy"].get<double>(), 0.0);
  EXPECT_LE(oos["oos_recall"].get<double>(), 1.0);
  // Each out-of-scope score's separation (mahalanobis fitted on the training split's features).
  for (const char* score : {"max_prob", "energy", "mahalanobis"}) {
    ASSERT_TRUE(oos["scores"].contains(score)) << oos.dump();
    for (const char* key : {"auroc", "fpr_at_95_tpr"}) {
      EXPECT_GE(oos["scores"][score][key].get<double>(), 0.0) << score;
      EXPECT_LE(oos["scores"][score][key].get<double>(), 1.0) << score;
    }
  }

  const auto thr_dir = (root_ / "runs" / "oos_threshold").string();
  r = cli({"train", config_, "oos.label=oos", "oos.method=threshold", "output.dir=" + thr_dir});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(r.err.find("left 40 out-of-scope"), std::string::npos) << r.dump();
  const auto labels = read_json(fs::path(thr_dir) / "labels.json");
  EXPECT_EQ(labels.size(), 4u) << "the threshold method does not train an oos class";
  const auto chosen = read_json(fs::path(thr_dir) / "oos.json");
  const double t = chosen["threshold"].get<double>();
  EXPECT_GE(t, 0.0);
  EXPECT_LE(t, 1.0);
  auto report = read_json(fs::path(thr_dir) / "report.json")["test"];
  EXPECT_DOUBLE_EQ(report["oos"]["threshold"].get<double>(), t);
  EXPECT_EQ(report["oos"]["oos_count"], 10);
  // eval reads the chosen threshold back and reproduces the figures.
  r = cli({"eval", thr_dir, "--split", "test"});
  ASSERT_EQ(r.code, 0) << r.dump();
  auto again = read_json(fs::path(thr_dir) / "report.json")["test"]["oos"];
  EXPECT_EQ(again, report["oos"]);
  // predict applies the same threshold: its out-of-scope share on the test split equals the
  // share of rejections in the report's confusion matrix (last row/column = oos).
  const auto out = (root_ / "thr_predictions.jsonl").string();
  r = cli({"predict", thr_dir, "--manifest", test_manifest_, "--out", out});
  ASSERT_EQ(r.code, 0) << r.dump();
  int rejected = 0, lines = 0;
  for (const auto& line : lines_of(out)) {
    const auto j = json::parse(line);
    ASSERT_TRUE(j.contains("out_of_scope")) << line;
    rejected += j["out_of_scope"].get<bool>();
    ++lines;
  }
  EXPECT_EQ(lines, 50);
  int64_t predicted_oos = 0;
  for (const auto& row : report["confusion"]["matrix"]) predicted_oos += row.back().get<int64_t>();
  EXPECT_EQ(rejected, predicted_oos);

  // The class method needs out-of-scope samples in training.
  r = cli({"train", config_, "oos.label=nothing_like_this",
           "output.dir=" + (root_ / "runs" / "oos_bad").string()});
  expect_failure(r, 3, {"oos.label", "nothing_like_this"});
}

/// The test split's samples a run serves as out of scope: `predict` against the report's
/// confusion matrix (the column of the out-of-scope class, `oos_column`), which must agree.
void expect_predict_serves_as_the_report_says(const CliResult& predict_result, const std::string& predictions,
                                              const json& report, size_t oos_column) {
  ASSERT_EQ(predict_result.code, 0) << predict_result.dump();
  int rejected = 0;
  std::ifstream in(predictions);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) rejected += json::parse(line)["out_of_scope"].get<bool>();
  }
  int64_t predicted_oos = 0;
  for (const auto& row : report["confusion"]["matrix"]) predicted_oos += row.at(oos_column).get<int64_t>();
  EXPECT_EQ(rejected, predicted_oos);
}

TEST_F(EndToEndTest, EnergyAndMahalanobisScoresAreServedWithTheirThresholdChosenOnVal) {
  append_oos(train_manifest_, root_ / "data", "train", 40, 11);
  append_oos(val_manifest_, root_ / "data", "val", 10, 12);
  append_oos(test_manifest_, root_ / "data", "test", 10, 13);

  // Method both: out-of-scope is a class, and a Mahalanobis score under the threshold too.
  const auto both = (root_ / "runs" / "oos_both").string();
  auto r = cli({"train", config_, "oos.label=oos", "oos.method=both", "oos.score=mahalanobis", "output.dir=" + both});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto chosen = read_json(fs::path(both) / "oos.json");
  EXPECT_EQ(chosen["method"], "both");
  EXPECT_EQ(chosen["score"], "mahalanobis");
  const double t = chosen["threshold"].get<double>();
  EXPECT_LE(t, 0.0) << "minus a squared distance";
  EXPECT_TRUE(fs::exists(fs::path(both) / "oos_mahalanobis.pt"));
  auto report = read_json(fs::path(both) / "report.json")["test"];
  EXPECT_EQ(report["oos"]["method"], "both");
  EXPECT_EQ(report["oos"]["score"], "mahalanobis");
  EXPECT_DOUBLE_EQ(report["oos"]["threshold"].get<double>(), t);
  EXPECT_TRUE(report["oos"]["scores"].contains("mahalanobis"));
  // eval reads the run's fit and threshold back and reproduces every figure.
  r = cli({"eval", both, "--split", "test"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto again = read_json(fs::path(both) / "report.json")["test"];
  EXPECT_EQ(again["oos"], report["oos"]);
  EXPECT_EQ(again["confusion"], report["confusion"]);
  const auto labels = read_json(fs::path(both) / "labels.json");
  size_t oos_column = 0;
  while (oos_column < labels.size() && labels[oos_column] != "oos") ++oos_column;
  ASSERT_LT(oos_column, labels.size()) << labels.dump();
  const auto out = (root_ / "both_predictions.jsonl").string();
  expect_predict_serves_as_the_report_says(cli({"predict", both, "--manifest", test_manifest_, "--out", out}), out,
                                           report, oos_column);
  // calibrate chooses the threshold again, on the same fit (the weights did not change).
  r = cli({"calibrate", both, "--json"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto summary = json::parse(r.out);
  EXPECT_EQ(summary["oos_score"], "mahalanobis");
  EXPECT_DOUBLE_EQ(summary["oos_threshold"].get<double>(), t);
  // A broken or missing fit is named, and nothing is served without it.
  const auto fit = fs::path(both) / "oos_mahalanobis.pt";
  fs::resize_file(fit, fs::file_size(fit) / 2);
  expect_failure(cli({"predict", both, "--text", "hello"}), 5, {"oos_mahalanobis.pt"});
  fs::remove(fit);
  expect_failure(cli({"eval", both, "--split", "test"}), 5, {"oos_mahalanobis.pt"});

  // Method threshold on the energy score: a threshold on its own scale, served as reported.
  const auto energy = (root_ / "runs" / "oos_energy").string();
  r = cli({"train", config_, "oos.label=oos", "oos.method=threshold", "oos.score=energy",
           "oos.max_in_scope_loss=0.05", "output.dir=" + energy});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto energy_oos = read_json(fs::path(energy) / "oos.json");
  EXPECT_EQ(energy_oos["score"], "energy");
  report = read_json(fs::path(energy) / "report.json")["test"];
  EXPECT_DOUBLE_EQ(report["oos"]["threshold"].get<double>(), energy_oos["threshold"].get<double>());
  EXPECT_EQ(read_json(fs::path(energy) / "report.json")["val"]["oos"]["score"], "energy");
  const auto energy_out = (root_ / "energy_predictions.jsonl").string();
  expect_predict_serves_as_the_report_says(
      cli({"predict", energy, "--manifest", test_manifest_, "--out", energy_out}), energy_out, report,
      report["confusion"]["matrix"].size() - 1);

  // A fixed threshold is a probability: refused for the other scores.
  expect_failure(cli({"train", config_, "oos.label=oos", "oos.method=threshold", "oos.score=energy",
                      "oos.threshold=0.4", "output.dir=" + (root_ / "runs" / "oos_fixed").string()}),
                 3, {"oos.threshold", "energy"});
}

// ---- Ensembles. ----

TEST_F(EndToEndTest, TrainWithEnsembleMembersTrainsEachAndCombinesThem) {
  const auto ens = (root_ / "runs" / "trained_ensemble").string();
  auto r = cli({"train", config_, "ensemble.members=2", "ensemble.overrides=['', 'model.text_encoder.type=gru']",
                "runtime.seed=5", "--json", "output.dir=" + ens});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_EQ(json::parse(r.out)["run_dir"], fs::weakly_canonical(ens).string());
  const auto manifest = read_json(fs::path(ens) / "ensemble.json");
  ASSERT_EQ(manifest["members"].size(), 2u) << manifest.dump();
  for (int i = 0; i < 2; ++i) {
    const auto member = fs::path(ens) / "members" / std::to_string(i);
    EXPECT_EQ(manifest["members"][i]["run"], fs::weakly_canonical(member).string());
    EXPECT_TRUE(fs::exists(member / "model.pt")) << member;
    const auto config = test::read_file((member / "config.yaml").string());
    EXPECT_NE(config.find("seed: " + std::to_string(5 + i)), std::string::npos) << config;  // runtime.seed + i
    EXPECT_NE(config.find("members: 1"), std::string::npos) << config;
  }
  const auto gru = test::read_file((fs::path(ens) / "members" / "1" / "config.yaml").string());
  EXPECT_NE(gru.find("type: \"gru\""), std::string::npos) << gru;
  const auto report = read_json(fs::path(ens) / "report.json");
  EXPECT_EQ(report["test"]["members"].size(), 2u) << report["test"].dump();
  // The ensemble's config trains the same ensemble again.
  EXPECT_NE(test::read_file((fs::path(ens) / "config.yaml").string()).find("members: 2"), std::string::npos);
  // --resume auto: finished members are kept (not retrained), the ensemble is made again.
  const auto before = fs::last_write_time(fs::path(ens) / "members" / "0" / "model.pt");
  r = cli({"train", config_, "ensemble.members=2", "ensemble.overrides=['', 'model.text_encoder.type=gru']",
           "runtime.seed=5", "output.dir=" + ens, "--resume", "auto"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(r.err.find("member 1 of 2 is finished"), std::string::npos) << r.dump();
  EXPECT_EQ(fs::last_write_time(fs::path(ens) / "members" / "0" / "model.pt"), before);

  // Checked before any training: one seed or override list per member, inputs shared.
  const auto other = (root_ / "runs" / "bad_ensemble").string();
  expect_failure(cli({"train", config_, "ensemble.members=2", "ensemble.seeds=[1]", "output.dir=" + other}), 3,
                 {"ensemble.seeds", "lists 1 members"});
  expect_failure(cli({"train", config_, "ensemble.members=2", "ensemble.overrides=['', 'data.text.max_length=7']",
                      "output.dir=" + other}),
                 3, {"ensemble.overrides", "member 1", "max_length"});
  expect_failure(cli({"train", config_, "ensemble.members=2", "ensemble.overrides=['', 'train.epochz=1']",
                      "output.dir=" + other}),
                 3, {"ensemble.overrides", "member 1", "train.epochz"});
  EXPECT_FALSE(fs::exists(other));
}

TEST_F(EndToEndTest, AnEnsembleOfRunsIsARunDirectoryThatAveragesTheMembers) {
  append_oos(train_manifest_, root_ / "data", "train", 40, 11);
  append_oos(val_manifest_, root_ / "data", "val", 10, 12);
  append_oos(test_manifest_, root_ / "data", "test", 10, 13);
  // Two members of different seeds and text encoders (an ensemble's architectures may differ).
  const auto a = (root_ / "runs" / "member_a").string();
  const auto b = (root_ / "runs" / "member_b").string();
  auto r = cli({"train", config_, "oos.label=oos", "runtime.seed=1", "output.dir=" + a});
  ASSERT_EQ(r.code, 0) << r.dump();
  r = cli({"train", config_, "oos.label=oos", "runtime.seed=2", "model.text_encoder.type=gru", "output.dir=" + b});
  ASSERT_EQ(r.code, 0) << r.dump();

  const auto ens = (root_ / "runs" / "ensemble").string();
  r = cli({"ensemble", a, b, "--out", ens, "--json", "eval.splits=[val,test]"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto summary = json::parse(r.out);
  EXPECT_EQ(summary["members"].size(), 2u);
  EXPECT_TRUE(fs::exists(fs::path(ens) / "ensemble.json"));
  EXPECT_FALSE(fs::exists(fs::path(ens) / "model.pt"));
  const auto report = read_json(fs::path(ens) / "report.json");
  for (const char* split : {"val", "test"}) {
    ASSERT_TRUE(report.contains(split)) << report.dump();
    const auto& members = report[split]["members"];
    ASSERT_EQ(members.size(), 2u) << report[split].dump();
    EXPECT_EQ(members[0]["run"], fs::weakly_canonical(a).string());
    EXPECT_EQ(members[1]["run"], fs::weakly_canonical(b).string());
    for (const auto& m : members) {
      EXPECT_GE(m["accuracy"].get<double>(), 0.0);
      EXPECT_LE(m["accuracy"].get<double>(), 1.0);
      EXPECT_TRUE(m.contains("oos_recall")) << m.dump();
    }
    EXPECT_TRUE(report[split]["oos"]["scores"].contains("mahalanobis")) << report[split]["oos"].dump();
    // An ensemble's logits are log mean probabilities: no energy score is reported for them.
    EXPECT_FALSE(report[split]["oos"]["scores"].contains("energy")) << report[split]["oos"].dump();
  }
  // Each member's figures are its own run's (its own calibration and out-of-scope class).
  const auto report_a = read_json(fs::path(a) / "report.json");
  EXPECT_NEAR(report["test"]["members"][0]["accuracy"].get<double>(), report_a["test"]["accuracy"].get<double>(), 1e-9);
  // eval reads the ensemble back and reproduces its figures.
  r = cli({"eval", ens, "--split", "test", "--json"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NEAR(json::parse(r.out)["metrics"]["accuracy"].get<double>(), report["test"]["accuracy"].get<double>(), 1e-9);

  // The ensemble's probabilities: the mean of the members' calibrated ones, then its own
  // temperature (fitted on val) on top.
  std::mt19937 rng(99);
  const auto image = (root_ / "easy.png").string();
  ASSERT_TRUE(cv::imwrite(image, test::fixture_image(0, rng)));
  const auto pa = Predictor::load(a), pb = Predictor::load(b), pe = Predictor::load(ens);
  const PredictInput input("please refund my purchase", image);
  const int64_t k = static_cast<int64_t>(pe.intents().size());
  std::map<std::string, double> mean;
  for (const auto* p : {&pa, &pb}) {
    for (const auto& s : p->predict(input, k).top) mean[s.intent] += s.probability / 2;
  }
  double z = 0;
  for (const auto& [intent, p] : mean) z += std::pow(p, 1 / pe.temperature());
  for (const auto& s : pe.predict(input, k).top) {
    EXPECT_NEAR(s.probability, std::pow(mean[s.intent], 1 / pe.temperature()) / z, 1e-4) << s.intent;
  }
  r = cli({"predict", ens, "--text", "please refund my purchase", "--image", image});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(r.out.find("refund_left"), std::string::npos) << r.dump();

  // Refused: one member; members that predict other intents; an ensemble's tune or export.
  expect_failure(cli({"ensemble", a, "--out", (root_ / "runs" / "e1").string()}), 3, {"at least two"});
  const auto other = (root_ / "runs" / "other_labels").string();
  fs::copy(a, other, fs::copy_options::recursive);
  auto labels = read_json(fs::path(other) / "labels.json");
  std::reverse(labels.begin(), labels.end());
  std::ofstream(fs::path(other) / "labels.json") << labels.dump();
  expect_failure(cli({"ensemble", a, other, "--out", (root_ / "runs" / "e2").string()}), 5,
                 {"other_labels", "other intents"});
  EXPECT_FALSE(fs::exists(root_ / "runs" / "e2")) << "nothing is written before the members are checked";
  expect_failure(cli({"export", ens}), 5, {"ensemble run"});

  // The ensemble teaches a student (train.distill): its probabilities once per training sample;
  // a teacher of other intents is refused before anything is written.
  const auto student = (root_ / "runs" / "student").string();
  r = cli({"train", config_, "oos.label=oos", "train.epochs=2", "train.distill.teacher=" + ens, "output.dir=" + student});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(r.err.find("distilling from"), std::string::npos) << r.dump();
  EXPECT_NE(r.err.find("probabilities on 200 training samples"), std::string::npos) << r.dump();
  const auto refused = (root_ / "runs" / "student_refused").string();
  expect_failure(cli({"train", config_, "oos.label=oos", "train.distill.teacher=" + other, "output.dir=" + refused}), 3,
                 {"train.distill.teacher", "other intents"});
  EXPECT_FALSE(fs::exists(refused));
  // A member changed since: the ensemble says which and how to mend it.
  fs::copy_file(fs::path(a) / "model.pt", fs::path(b) / "model.pt", fs::copy_options::overwrite_existing);
  expect_failure(cli({"eval", ens}), 5, {"member 1", "changed since", "mmintent ensemble"});
}

TEST_F(EndToEndTest, QuantizeWritesAnInt8RunThatEveryCommandReads) {
  append_oos(train_manifest_, root_ / "data", "train", 40, 11);
  append_oos(val_manifest_, root_ / "data", "val", 10, 12);
  append_oos(test_manifest_, root_ / "data", "test", 10, 13);
  const auto run = (root_ / "runs" / "float").string();
  auto r = cli({"train", config_, "oos.label=oos", "output.dir=" + run});
  ASSERT_EQ(r.code, 0) << r.dump();

  const auto q = (root_ / "runs" / "int8").string();
  r = cli({"quantize", run, "--out", q, "--json", "--latency-samples", "12", "eval.splits=[val,test]"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto summary = json::parse(r.out);
  EXPECT_TRUE(fs::exists(fs::path(q) / "model.int8.pt"));
  EXPECT_FALSE(fs::exists(fs::path(q) / "model.pt"));
  EXPECT_LT(summary["int8_bytes"].get<int64_t>(), summary["float_bytes"].get<int64_t>()) << summary.dump();
  EXPECT_EQ(summary["latency"]["samples"], 12);
  EXPECT_GT(summary["latency"]["float_ms_median"].get<double>(), 0);
  EXPECT_GT(summary["latency"]["int8_ms_median"].get<double>(), 0);
  const auto manifest = read_json(fs::path(q) / "quantize.json");
  EXPECT_EQ(manifest["source_run"], fs::weakly_canonical(run).string());
  EXPECT_EQ(manifest["int8_bytes"], summary["int8_bytes"]);
  const auto report = read_json(fs::path(q) / "report.json");
  const auto float_report = read_json(fs::path(run) / "report.json");
  for (const char* split : {"val", "test"}) {
    const auto& s = manifest["splits"][split];
    ASSERT_TRUE(s.contains("agreement")) << manifest.dump();
    EXPECT_GE(s["agreement"].get<double>(), 0.9) << s.dump();
    EXPECT_TRUE(s["int8"].contains("oos_recall")) << s.dump();
    // The int8 figures are the new run's report; the float ones are the float run's own.
    EXPECT_NEAR(s["int8"]["accuracy"].get<double>(), report[split]["accuracy"].get<double>(), 1e-9);
  }
  EXPECT_NEAR(manifest["splits"]["test"]["float"]["accuracy"].get<double>(), float_report["test"]["accuracy"].get<double>(),
              1e-9);

  // eval, predict and ensemble read it as any run; tune and a second quantize refuse it.
  r = cli({"eval", q, "--split", "test", "--json"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NEAR(json::parse(r.out)["metrics"]["accuracy"].get<double>(), report["test"]["accuracy"].get<double>(), 1e-9);
  std::mt19937 rng(7);
  const auto image = (root_ / "photo.png").string();
  ASSERT_TRUE(cv::imwrite(image, test::fixture_image(0, rng)));
  r = cli({"predict", q, "--text", "please refund my purchase", "--image", image});
  ASSERT_EQ(r.code, 0) << r.dump();
  r = cli({"ensemble", run, q, "--out", (root_ / "runs" / "mixed").string(), "--json"});
  ASSERT_EQ(r.code, 0) << r.dump();
  expect_failure(cli({"quantize", q, "--out", (root_ / "runs" / "q2").string()}), 5, {"int8 weights already"});
  expect_failure(cli({"tune", q, "--feedback", val_manifest_, "--out", (root_ / "runs" / "t").string()}), 5,
                 {"int8 weights", "quantize.json"});
  expect_failure(cli({"quantize", run, "--out", (root_ / "runs" / "q3").string(), "model.head.hidden=[8]"}), 3,
                 {"model.head.hidden", "cannot be overridden"});
  EXPECT_FALSE(fs::exists(root_ / "runs" / "q3"));
  expect_failure(cli({"quantize", run, "--out", (fs::path(run) / "inside").string()}), 3, {"--out", "outside"});

  // A truncated int8 file: a checkpoint error naming it.
  const auto broken = (root_ / "runs" / "broken").string();
  fs::copy(q, broken, fs::copy_options::recursive);
  const auto bytes = test::read_file((fs::path(broken) / "model.int8.pt").string());
  std::ofstream(fs::path(broken) / "model.int8.pt", std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 3);
  expect_failure(cli({"eval", broken}), 5, {"model.int8.pt"});
}

// ---- Usage. ----

TEST_F(EndToEndTest, JsonSummariesAreAllThatIsOnStdout) {
  const auto dir = (root_ / "runs" / "json").string();
  const auto t = cli({"train", config_, "train.epochs=2", "output.dir=" + dir, "--json"});
  ASSERT_EQ(t.code, 0) << t.dump();
  const auto train = json::parse(t.out);  // throws (fails the test) on anything but one JSON value
  EXPECT_EQ(train.at("run_dir"), dir);
  EXPECT_EQ(train.at("epochs_completed"), 2);
  EXPECT_EQ(train.at("stop_reason"), "max_epochs");
  const auto report = read_json(fs::path(dir) / "report.json");
  for (const char* split : {"val", "test"}) {
    EXPECT_DOUBLE_EQ(train.at("metrics").at(split).at("accuracy").get<double>(),
                     report.at(split).at("accuracy").get<double>()) << split;
  }
  const auto e = cli({"eval", dir, "--json"});
  ASSERT_EQ(e.code, 0) << e.dump();
  const auto eval = json::parse(e.out);
  EXPECT_EQ(eval.at("split"), "test");
  EXPECT_DOUBLE_EQ(eval.at("metrics").at("accuracy").get<double>(),
                   train.at("metrics").at("test").at("accuracy").get<double>());
  EXPECT_EQ(eval.at("metrics").at("count"), 40);
  const auto c = cli({"calibrate", dir, "--json"});
  ASSERT_EQ(c.code, 0) << c.dump();
  const auto calibrate = json::parse(c.out);
  EXPECT_GT(calibrate.at("temperature").get<double>(), 0);
  EXPECT_EQ(calibrate.at("samples"), 40);
  EXPECT_EQ(calibrate.at("calibration_file"), (fs::path(dir) / "calibration.json").string());
}

TEST_F(EndToEndTest, HelpAndUsageExitCodes) {
  const auto help = cli({"--help"});
  EXPECT_EQ(help.code, 0) << help.dump();
  EXPECT_NE(help.out.find("train"), std::string::npos) << help.dump();
  EXPECT_NE(help.out.find("predict"), std::string::npos) << help.dump();
  const auto train_help = cli({"train", "--help"});
  EXPECT_EQ(train_help.code, 0) << train_help.dump();
  EXPECT_NE(train_help.out.find("--resume"), std::string::npos) << train_help.dump();
  // Every command's help shows one example, and the defaults of its options.
  for (const char* command : {"train", "eval", "predict", "calibrate", "config", "serve", "tune", "import"}) {
    const auto h = cli({command, "--help"});
    EXPECT_NE(h.out.find("Example:\n  mmintent " + std::string(command) + " "), std::string::npos) << h.dump();
  }
  EXPECT_NE(cli({"eval", "--help"}).out.find("--split TEXT=test"), std::string::npos);
  EXPECT_NE(cli({"predict", "--help"}).out.find("--top-k INT:POSITIVE=3"), std::string::npos);
  EXPECT_EQ(cli({}).code, 2);
  EXPECT_EQ(cli({"frobnicate"}).code, 2);
  EXPECT_EQ(cli({"predict", run_dir_, "--top-k", "0", "--text", "hi"}).code, 2);
}

TEST_F(EndToEndTest, PredictOrEvalOnADirThatIsNotARunFails) {
  const auto not_run = (root_ / "data").string();
  const auto p = cli({"predict", not_run, "--text", "please refund my purchase"});
  EXPECT_EQ(p.code, 5) << p.dump();
  EXPECT_NE(p.error_line().find(not_run), std::string::npos) << p.dump();
  EXPECT_NE(p.error_line().find("config.yaml"), std::string::npos) << p.dump();
  const auto e = cli({"eval", not_run});
  EXPECT_EQ(e.code, 5) << e.dump();
  EXPECT_NE(e.error_line().find("not a run directory"), std::string::npos) << e.dump();
  EXPECT_FALSE(fs::exists(root_ / "data" / "report.json"));
  // A directory that does not exist: one message and one exit code from every command.
  const auto nowhere = (root_ / "runs" / "nowhere").string();
  const std::vector<std::vector<std::string>> commands{
      {"predict", nowhere, "--text", "hi"}, {"eval", nowhere}, {"calibrate", nowhere}, {"serve", nowhere}};
  for (const auto& args : commands) {
    const auto r = cli(args);
    EXPECT_EQ(r.code, 5) << r.dump();
    EXPECT_EQ(r.error_line(), "mmintent: error: run directory '" + nowhere + "' does not exist") << r.dump();
  }
}

TEST(CliVersionTest, SaysItsVersionLibTorchsTheBlasInUseAndCuda) {
  const auto r = test::run_cli(MMINTENT_CLI, {"--version"}, fs::temp_directory_path());
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_EQ(r.out.rfind("mmintent ", 0), 0u) << r.dump();
  for (const char* line : {"\nLibTorch ", "\nBLAS: ", "\nCUDA: "}) {
    EXPECT_NE(r.out.find(line), std::string::npos) << "no '" << line + 1 << "' line: " << r.dump();
  }
  // Debian's LibTorch calls the system BLAS: the line names its file.
  if (r.out.find("BLAS: none loaded") == std::string::npos) {
    EXPECT_NE(r.out.find("libblas"), std::string::npos) << r.dump();
  }
}

}  // namespace
}  // namespace mmintent
