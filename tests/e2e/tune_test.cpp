// End-to-end tests of `mmintent tune` (learning from feedback) and of soft labels in training
// manifests, through the real CLI (MMINTENT_CLI) on a small generated text-only fixture.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "mmintent/app/run.h"
#include "mmintent/error.h"
#include "mmintent/run/setup.h"
#include "mmintent/config/loader.h"
#include "mmintent/inference/predictor.h"
#include "mmintent/training/checkpoint.h"
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
using test::TempDir;

const std::vector<std::string> kIntents = {"cancel", "exchange", "refund", "track"};
const std::vector<std::vector<std::string>> kTexts = {
    {"cancel my order", "please cancel the order", "i do not want the order anymore", "stop my order"},
    {"swap this for another size", "exchange it for a bigger one", "can i swap the colour",
     "i want another size instead"},
    {"i want a refund", "give me my money back", "please refund my purchase", "refund this item"},
    {"where is my package", "track my parcel", "when will my order arrive", "has my parcel shipped"},
};
const std::vector<std::string> kOpenings = {"", "hi ", "hello ", "excuse me ", "please "};

std::string write_split(const fs::path& root, const std::string& split, int n, unsigned seed,
                        const std::string& extra = "") {
  std::mt19937 rng(seed);
  fs::create_directories(root / "data");
  const auto path = root / "data" / (split + ".jsonl");
  std::ofstream out(path);
  for (int i = 0; i < n; ++i) {
    const int k = i % 4;
    const auto& texts = kTexts[k];
    out << json{{"text", kOpenings[rng() % kOpenings.size()] + texts[rng() % texts.size()]},
                {"label", kIntents[k]}}.dump()
        << "\n";
  }
  out << extra;
  return path.string();
}

std::string config_text() {
  return test::fixture_text("configs/tune.yaml");
}

/// Every file under `dir` with its content.
std::map<std::string, std::string> contents(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = test::read_file(e.path().string());
  }
  return out;
}

/// A feedback line.
std::string fb(const std::string& text, const std::string& predicted, const std::string& reaction,
               const std::string& corrected_to = "") {
  json j{{"text", text}, {"predicted", predicted}, {"reaction", reaction}};
  if (!corrected_to.empty()) j["corrected_to"] = corrected_to;
  return j.dump() + "\n";
}

double probability(const std::string& run, const std::string& text, const std::string& intent) {
  auto predictor = Predictor::load(run);
  for (const auto& s : predictor.predict({text, ""}, 4).top) {
    if (s.intent == intent) return s.probability;
  }
  return 0;
}

class TuneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path();
    write_split(root_, "train", 80, 1);
    write_split(root_, "val", 24, 2);
    write_split(root_, "test", 24, 3);
    config_ = dir_.write("config.yaml", config_text());
    base_ = (root_ / "runs" / "base").string();
  }

  /// Runs `mmintent ARGS` with the temp dir as working directory; logs go to cli_logs/.
  CliResult cli(const std::vector<std::string>& args) const {
    return test::run_cli(MMINTENT_CLI, args, root_, {}, root_ / "cli_logs");
  }

  void train_base() {
    const auto r = cli({"train", config_});
    ASSERT_EQ(r.code, 0) << r.dump();
  }

  static void expect_failure(const CliResult& r, int code, const std::vector<std::string>& parts) {
    EXPECT_EQ(r.code, code) << r.dump();
    const auto line = r.error_line();
    ASSERT_FALSE(line.empty()) << "no 'mmintent: error:' line\n" << r.dump();
    for (const auto& p : parts) EXPECT_NE(line.find(p), std::string::npos) << "'" << p << "' not in: " << line;
  }

  TempDir dir_;
  fs::path root_;
  std::string config_, base_;
};

TEST_F(TuneTest, TuneLearnsTheFeedbackIntoANewRunAndNeverChangesTheOldOne) {
  train_base();
  const auto before = contents(base_);
  // A phrasing the training data never had, corrected to "cancel" again and again; some
  // acceptances and a rejection besides.
  std::string log;
  const std::vector<std::string> novel = {"forget the whole thing", "forget about it", "just forget the thing",
                                          "forget it all", "please forget the whole thing"};
  for (int rep = 0; rep < 4; ++rep) {
    for (const auto& t : novel) log += fb(t, "exchange", "corrected", "cancel");
  }
  log += fb("where is my package", "track", "accepted");
  log += fb("i want a refund", "refund", "accepted");
  log += fb("hello where is my parcel", "refund", "rejected");
  const auto feedback = dir_.write("feedback.jsonl", log);
  const auto before_p = probability(base_, "forget the thing", "cancel");

  const auto out = (root_ / "runs" / "tuned").string();
  // The fixture's val accuracy is already 1 before the tune, so it cannot tell the epochs
  // apart (restore_best would keep the first); the validation loss can.
  const auto r = cli({"tune", base_, "--feedback", feedback, "--out", out, "tune.epochs=6",
                      "tune.lr=0.01", "tune.replay_ratio=2", "train.early_stopping.metric=val.loss",
                      "train.early_stopping.mode=min"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(r.out.find("test.accuracy: "), std::string::npos) << r.dump();

  // The old run is byte for byte what it was.
  EXPECT_EQ(contents(base_), before);

  // The new run is complete.
  for (const char* f : {"config.yaml", "labels.json", "tokenizer.model", "model.pt", "best.pt", "last.pt",
                        "metrics.jsonl", "report.json", "tune.json", "train.log", "misclassified_test.jsonl"}) {
    EXPECT_TRUE(fs::is_regular_file(fs::path(out) / f)) << f;
  }
  // What train fits on val is fitted again for the new weights (calibration is on by default).
  EXPECT_EQ(fs::exists(fs::path(out) / "calibration.json"), before.count("calibration.json") > 0);
  EXPECT_EQ(test::read_file(out + "/labels.json"), before.at("labels.json"));
  EXPECT_EQ(test::read_file(out + "/tokenizer.model"), before.at("tokenizer.model"));
  const Config saved = load_config(out + "/config.yaml");
  EXPECT_EQ(saved.tune.epochs, 6);
  EXPECT_DOUBLE_EQ(saved.tune.replay_ratio, 2.0);
  EXPECT_EQ(fs::path(saved.output.dir), fs::path(out));
  const auto tune = json::parse(test::read_file(out + "/tune.json"));
  EXPECT_EQ(tune["accepted"], 2);
  EXPECT_EQ(tune["corrected"], 20);
  EXPECT_EQ(tune["rejected"], 1);
  EXPECT_EQ(tune["replay_per_epoch"], 46);
  EXPECT_EQ(tune["trainable_parameters"], tune["parameters"]);
  const auto report = json::parse(test::read_file(out + "/report.json"));
  EXPECT_GE(report["test"]["accuracy"].get<double>(), 0.75) << report.dump();  // nothing forgotten

  // The feedback was learned.
  const auto after_p = probability(out, "forget the thing", "cancel");
  EXPECT_GT(after_p, before_p + 0.2) << before_p << " -> " << after_p << "\n" << tune.dump() << "\n"
                                     << test::read_file(out + "/train.log");
  const auto top = Predictor::load(out).predict({"forget the thing", ""}, 2).top;
  EXPECT_EQ(top.at(0).intent, "cancel") << top.at(0).probability << ", then " << top.at(1).intent << " "
                                        << top.at(1).probability;
}

TEST_F(TuneTest, FreezeEncodersTrainsOnlyFusionAndHead) {
  train_base();
  const auto feedback = dir_.write("feedback.jsonl", fb("forget it all", "exchange", "corrected", "cancel") +
                                                         fb("track my parcel", "track", "accepted"));
  const auto out = (root_ / "runs" / "frozen").string();
  const auto r = cli({"tune", base_, "--feedback", feedback, "--out", out, "tune.freeze_encoders=true",
                      "tune.epochs=2", "tune.lr=0.05"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto tune = json::parse(test::read_file(out + "/tune.json"));
  EXPECT_LT(tune["trainable_parameters"].get<int64_t>(), tune["parameters"].get<int64_t>());
  EXPECT_GT(tune["trainable_parameters"].get<int64_t>(), 0);

  auto weights = [](const std::string& run) {
    const Config c = load_config(run + "/config.yaml");
    RunData data;
    data.labels = LabelMap::load(run + "/labels.json");
    data.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(run + "/tokenizer.model"));
    auto model = build_model(c, data);
    load_checkpoint(run + "/model.pt", *model, nullptr, c10::Device("cpu"), false);
    return copy_state(*model, true);
  };
  const auto old_w = weights(base_), new_w = weights(out);
  ASSERT_EQ(old_w.size(), new_w.size());
  int encoder = 0, head_changed = 0;
  for (size_t i = 0; i < old_w.size(); ++i) {
    const auto& name = old_w[i].first;
    if (name.rfind("text_encoder.", 0) == 0) {
      ++encoder;
      EXPECT_TRUE(old_w[i].second.equal(new_w[i].second)) << name << " changed";
    } else if (name.rfind("head.", 0) == 0 && !old_w[i].second.equal(new_w[i].second)) {
      ++head_changed;
    }
  }
  EXPECT_GT(encoder, 0);
  EXPECT_GT(head_changed, 0);
}

TEST_F(TuneTest, LoraTrainsAnAdapterThatEvalPredictAndMergeReadOverTheBase) {
  train_base();
  const auto before = contents(base_);
  std::string log;
  for (int rep = 0; rep < 4; ++rep) {
    for (const auto& t : {"forget the whole thing", "forget about it", "just forget the thing", "forget it all"}) {
      log += fb(t, "exchange", "corrected", "cancel");
    }
  }
  const auto feedback = dir_.write("feedback.jsonl", log);
  const auto before_p = probability(base_, "forget the thing", "cancel");
  const auto out = (root_ / "runs" / "lora").string();
  const auto r = cli({"tune", base_, "--feedback", feedback, "--out", out, "tune.method=lora", "tune.lora.rank=4",
                      "tune.lora.alpha=8", "tune.lora.targets=[linear, rnn, embedding]", "tune.epochs=6",
                      "tune.lr=0.01", "tune.replay_ratio=2", "train.early_stopping.enabled=false",
                      "train.early_stopping.restore_best=false"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_EQ(contents(base_), before);  // the base is only read

  // The run holds the adapter, not weights.
  for (const char* f : {"adapter.pt", "adapter.json", "config.yaml", "labels.json", "report.json", "tune.json"}) {
    EXPECT_TRUE(fs::is_regular_file(fs::path(out) / f)) << f;
  }
  for (const char* f : {"model.pt", "best.pt", "last.pt"}) EXPECT_FALSE(fs::exists(fs::path(out) / f)) << f;
  const auto manifest = json::parse(test::read_file(out + "/adapter.json"));
  EXPECT_EQ(manifest["rank"], 4);
  EXPECT_EQ(fs::path(manifest["base_run"].get<std::string>()), fs::canonical(base_));
  // The fixture's embeddings, GRU input matrix and the head's two layers.
  EXPECT_EQ(manifest["targets"], json({"text_encoder.embedding.weight", "text_encoder.rnn.weight_ih_l0",
                                       "head.0.weight", "head.2.weight"}));
  const auto tune = json::parse(test::read_file(out + "/tune.json"));
  EXPECT_EQ(tune["method"], "lora");
  EXPECT_EQ(tune["trainable_parameters"], manifest["parameters"]);
  EXPECT_LT(tune["trainable_parameters"].get<int64_t>(), tune["parameters"].get<int64_t>() / 3);

  // Predict loads the adapter over the base, and the feedback was learned.
  const auto after_p = probability(out, "forget the thing", "cancel");
  EXPECT_GT(after_p, before_p + 0.1) << before_p << " -> " << after_p << "\n" << test::read_file(out + "/train.log");
  const auto report = json::parse(test::read_file(out + "/report.json"));
  EXPECT_GE(report["test"]["accuracy"].get<double>(), 0.75) << report.dump();

  // merge folds it into plain weights that predict the same.
  const auto merged = (root_ / "runs" / "merged").string();
  const auto m = cli({"merge", out, "--out", merged});
  ASSERT_EQ(m.code, 0) << m.dump();
  EXPECT_TRUE(fs::is_regular_file(fs::path(merged) / "model.pt"));
  EXPECT_FALSE(fs::exists(fs::path(merged) / "adapter.json"));
  for (const std::string text : {"forget the thing", "track my parcel", "i want a refund"}) {
    const auto a = Predictor::load(out).predict({text, ""}, 4).top;
    const auto b = Predictor::load(merged).predict({text, ""}, 4).top;
    ASSERT_EQ(a.size(), b.size());
    for (size_t k = 0; k < a.size(); ++k) {
      EXPECT_EQ(a[k].intent, b[k].intent) << text;
      EXPECT_NEAR(a[k].probability, b[k].probability, 1e-6) << text;
    }
  }
  // Refusals: merging a plain run; an adapter over an adapter.
  expect_failure(cli({"merge", merged, "--out", (root_ / "runs" / "m2").string()}), 5, {"not an adapter run"});
  expect_failure(cli({"tune", out, "--feedback", feedback, "--out", (root_ / "runs" / "l2").string(), "tune.method=lora"}),
                 3, {"tune.method", "merge"});

  // The base's weights change (retrained, replaced): the adapter is refused, naming both.
  {
    const Config c = load_config(base_ + "/config.yaml");
    RunData data;
    data.labels = LabelMap::load(base_ + "/labels.json");
    data.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(base_ + "/tokenizer.model"));
    auto model = build_model(c, data);
    load_checkpoint(base_ + "/model.pt", *model, nullptr, c10::Device("cpu"), false);
    torch::NoGradGuard no_grad;
    model->named_parameters()["head.2.bias"].add_(0.5);
    save_checkpoint(base_ + "/model.pt", *model, nullptr, TrainingState{}, nullptr, c10::Device("cpu"));
  }
  expect_failure(cli({"eval", out}), 5, {"adapter.json", "adapts other weights", "model.pt"});
  EXPECT_THROW(Predictor::load(out), CheckpointError);
}

TEST_F(TuneTest, RejectionsLowerTheRejectedIntent) {
  train_base();
  const std::string text = "please refund my purchase";
  std::string log;
  for (int i = 0; i < 8; ++i) log += fb(text, "refund", "rejected");
  const auto feedback = dir_.write("feedback.jsonl", log);
  const auto out = (root_ / "runs" / "rejected").string();
  const auto r = cli({"tune", base_, "--feedback", feedback, "--out", out, "tune.replay_ratio=0",
                      "tune.epochs=3", "tune.lr=0.01", "tune.rejection_weight=2"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const double before = probability(base_, text, "refund"), after = probability(out, text, "refund");
  EXPECT_LT(after, before - 0.1) << before << " -> " << after;
}

TEST_F(TuneTest, BadFeedbackIsADataErrorNamingFileAndLineAndWritesNothing) {
  train_base();
  const auto out = (root_ / "runs" / "never").string();
  const auto unknown = dir_.write("unknown.jsonl", fb("cancel my order", "cancel", "accepted") +
                                                       fb("cancel my order", "cancle", "accepted"));
  expect_failure(cli({"tune", base_, "--feedback", unknown, "--out", out}), 4,
                 {"unknown.jsonl:2:", "predicted intent 'cancle' is not in the run's label map"});
  const auto correction = dir_.write("correction.jsonl",
                                     fb("cancel my order", "refund", "corrected", "cancelled"));
  expect_failure(cli({"tune", base_, "--feedback", correction, "--out", out}), 4,
                 {"correction.jsonl:1:", "corrected_to intent 'cancelled'"});
  const auto malformed = dir_.write("malformed.jsonl", fb("x", "cancel", "accepted") + "{\"text\": \"x\",\n");
  expect_failure(cli({"tune", base_, "--feedback", malformed, "--out", out}), 4,
                 {"malformed.jsonl:2:", "not valid JSON"});
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(TuneTest, OutputDirectoryAndOverrideRules) {
  train_base();
  const auto feedback = dir_.write("feedback.jsonl", fb("cancel my order", "cancel", "accepted"));
  expect_failure(cli({"tune", base_, "--feedback", feedback, "--out", base_}), 3,
                 {"--out", "tune never changes the old run"});
  expect_failure(cli({"tune", base_, "--feedback", feedback, "--out", base_ + "/sub"}), 3, {"--out"});
  dir_.write("runs/full/x.txt", "x");
  expect_failure(cli({"tune", base_, "--feedback", feedback, "--out", "runs/full"}), 3,
                 {"is not empty", "--overwrite"});
  expect_failure(cli({"tune", base_, "--feedback", feedback, "--out", "runs/t", "tune.replay_ratio=-1"}), 3,
                 {"tune.replay_ratio", "out of range"});
  expect_failure(cli({"tune", base_, "--feedback", feedback, "--out", "runs/t", "tune.epoch=2"}), 3,
                 {"tune.epoch", "did you mean 'epochs'"});
  expect_failure(cli({"tune", "data", "--feedback", feedback, "--out", "runs/t"}), 5, {"not a run directory"});
  EXPECT_EQ(cli({"tune", base_, "--out", "runs/t"}).code, 2);  // --feedback is required
  EXPECT_FALSE(fs::exists(root_ / "runs" / "t"));
  // --overwrite allows a non-empty directory.
  const auto r = cli({"tune", base_, "--feedback", feedback, "--out", "runs/full", "--overwrite", "tune.epochs=1"});
  EXPECT_EQ(r.code, 0) << r.dump();
}

TEST_F(TuneTest, SoftLabelsTrainAndTheirIntentsJoinTheLabelMap) {
  // Soft training samples, one naming an intent ("greeting") that no hard label has.
  const std::string soft =
      json{{"text", "hello there i want a refund"}, {"label", {{"refund", 0.8}, {"greeting", 0.2}}}}.dump() + "\n" +
      json{{"text", "swap or refund it"}, {"label", {{"refund", 0.5}, {"exchange", 0.5}}}}.dump() + "\n";
  write_split(root_, "train", 80, 1, soft);
  const auto r = cli({"train", config_});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto labels = json::parse(test::read_file(base_ + "/labels.json"));
  EXPECT_EQ(labels, json({"cancel", "exchange", "greeting", "refund", "track"}));
  EXPECT_GE(json::parse(test::read_file(base_ + "/report.json"))["test"]["accuracy"].get<double>(), 0.75);

  // A soft label that does not sum to 1 is a data error naming the line.
  write_split(root_, "train", 8, 1, json{{"text", "x"}, {"label", {{"refund", 0.5}}}}.dump() + "\n");
  expect_failure(cli({"train", config_, "output.dir=runs/bad"}), 4,
                 {"train.jsonl:9:", "the probabilities sum to 0.5"});
}

}  // namespace
}  // namespace mmintent

namespace mmintent {
namespace {

/// `predict --explore` over a labelled stream, and a simulated person who only accepts (the
/// shown intent is the label) or rejects; returns the feedback log's text.
std::string explored_feedback(const fs::path& predictions, bool with_propensity) {
  std::ifstream in(predictions);
  std::string line, log;
  while (std::getline(in, line)) {
    const auto p = json::parse(line);
    json f{{"text", p["text"]}, {"predicted", p["shown"]},
           {"reaction", p["shown"] == p["label"] ? "accepted" : "rejected"}};
    if (with_propensity) f["propensity"] = p["propensity"];
    log += f.dump() + "\n";
  }
  return log;
}

TEST_F(TuneTest, ExplorationLogsPropensitiesAndOffPolicyTuningEstimatesOnAHeldOutLog) {
  train_base();
  const auto stream = write_split(root_, "stream", 120, 9);
  const auto preds = (root_ / "preds.jsonl").string();
  auto r = cli({"predict", base_, "--manifest", stream, "--out", preds, "--explore", "0.5"});
  ASSERT_EQ(r.code, 0) << r.dump();
  // Every line: the intent shown and the policy's probability of it, (1 - e)[top] + e / K.
  const std::string first = test::read_file(preds);
  int explored = 0;
  {
    std::ifstream in(preds);
    std::string line;
    while (std::getline(in, line)) {
      const auto p = json::parse(line);
      const bool greedy = p["shown"] == p["top"][0]["intent"];
      explored += !greedy;
      EXPECT_NEAR(p["propensity"].get<double>(), (greedy ? 0.5 : 0.0) + 0.5 / 4, 1e-9) << line;
    }
  }
  EXPECT_GT(explored, 10);  // about 3/8 of 120 show another intent than the top one
  // Seeded by the run's seed and the record's line: a rerun shows the same intents.
  ASSERT_EQ(cli({"predict", base_, "--manifest", stream, "--out", preds, "--explore", "0.5"}).code, 0);
  EXPECT_EQ(test::read_file(preds), first);

  const auto out = (root_ / "runs" / "bandit").string();
  // Without propensities the off-policy objectives refuse the log, naming its first line.
  const auto plain = dir_.write("plain.jsonl", explored_feedback(preds, false));
  expect_failure(cli({"tune", base_, "--feedback", plain, "--out", out, "tune.objective=ips"}), 4,
                 {"plain.jsonl:1:", "tune.objective: ips needs a 'propensity' on every record"});
  EXPECT_FALSE(fs::exists(out));

  const auto logged = dir_.write("logged.jsonl", explored_feedback(preds, true));
  r = cli({"tune", base_, "--feedback", logged, "--out", out, "tune.objective=snips", "tune.holdout=0.3",
           "tune.epochs=2"});
  ASSERT_EQ(r.code, 0) << r.dump();
  const auto tune = json::parse(test::read_file((fs::path(out) / "tune.json").string()));
  EXPECT_EQ(tune["objective"], "snips");
  const int64_t held = tune["off_policy"]["held_out"].get<int64_t>();
  EXPECT_GT(held, 0);
  EXPECT_EQ(tune["feedback_samples"].get<int64_t>() + held, 120);
  for (const char* policy : {"base", "tuned"}) {
    for (const char* estimator : {"ips", "snips", "dr"}) {
      const auto& e = tune["off_policy"][policy][estimator];
      const auto ci = e["ci95"];
      EXPECT_LE(ci[0].get<double>(), e["value"].get<double>()) << policy << " " << estimator;
      EXPECT_GE(ci[1].get<double>(), e["value"].get<double>()) << policy << " " << estimator;
      EXPECT_GE(e["value"].get<double>(), 0) << policy << " " << estimator;
    }
  }
  // The base policy shows the top intent; its SNIPS estimate only counts the held-out records
  // where the log shows the top intent too, so it lies in [0, 1].
  EXPECT_LE(tune["off_policy"]["base"]["snips"]["value"].get<double>(), 1.0);
  EXPECT_EQ(tune["off_policy"]["held_out_lines"].size(), static_cast<size_t>(held));
}

}  // namespace
}  // namespace mmintent
