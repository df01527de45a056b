#include "mmintent/config/loader.h"
#include "mmintent/error.h"
#include "support/support.h"

#include <gmock/gmock.h>

using mmintent::ConfigError;
using mmintent::parse_config;
using ::testing::HasSubstr;

namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    train_ = dir_.write("train.jsonl", "{\"text\": \"hi\", \"image\": \"a.png\", \"label\": \"x\"}\n");
    dir_.write("val.jsonl", "{\"text\": \"hi\", \"image\": \"a.png\", \"label\": \"x\"}\n");
  }
  std::string base() const {
    return "data:\n  train: train.jsonl\n  val: val.jsonl\neval:\n  splits: [val]\n";
  }
  std::string cfg_path() const { return (dir_.path() / "cfg.yaml").string(); }
  /// Parses `yaml` and returns the ConfigError it raises.
  ConfigError error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
    try {
      parse_config(yaml, cfg_path(), overrides);
    } catch (const ConfigError& e) {
      return e;
    }
    ADD_FAILURE() << "no ConfigError for:\n" << yaml;
    return ConfigError("", "", 0, "");
  }
  mmintent::test::TempDir dir_;
  std::string train_;
};

TEST_F(ConfigTest, DefaultsAndResolvedPaths) {
  auto c = parse_config(base(), cfg_path());
  EXPECT_EQ(c.data.train, train_);
  EXPECT_EQ(c.model.text_encoder.type(), "lstm");
  EXPECT_EQ(c.train.optimizer.type, "adamw");
  EXPECT_EQ(c.data.loader.batch_size, 32);
  EXPECT_TRUE(c.model.uses("text"));
  EXPECT_TRUE(c.model.uses("image"));
}

TEST_F(ConfigTest, ReadsNestedValues) {
  auto c = parse_config(base() +
                            "model:\n  text_encoder: {type: gru, hidden_size: 32, pooling: max}\n"
                            "  image_encoder: {channels: [8, 16]}\n"
                            "train:\n  optimizer: {type: sgd, lr: 0.1, momentum: 0.8}\n"
                            "  early_stopping: {metric: val.macro_f1, mode: max, patience: 2}\n",
                        cfg_path());
  EXPECT_EQ(c.model.text_encoder.type(), "gru");
  EXPECT_EQ(c.model.text_encoder.hidden_size(), 32);
  EXPECT_EQ(c.model.image_encoder.channels(), (std::vector<int64_t>{8, 16}));
  EXPECT_DOUBLE_EQ(c.train.optimizer.lr, 0.1);
  EXPECT_EQ(c.train.early_stopping.metric, "val.macro_f1");
}

TEST_F(ConfigTest, UnknownKeyNamesFileKeyAndLine) {
  auto e = error_of(base() + "train:\n  epochs: 3\n  optimiser: {lr: 1}\n");
  EXPECT_EQ(e.key(), "train.optimiser");
  EXPECT_EQ(e.line(), 8);
  EXPECT_THAT(e.what(), HasSubstr("cfg.yaml:8"));
  EXPECT_THAT(e.what(), HasSubstr("unknown key"));
  EXPECT_THAT(e.what(), HasSubstr("did you mean 'optimizer'"));
}

TEST_F(ConfigTest, UnknownTopLevelSection) {
  auto e = error_of(base() + "trainer: {epochs: 3}\n");
  EXPECT_EQ(e.key(), "trainer");
  EXPECT_THAT(e.what(), HasSubstr("unknown key"));
}

TEST_F(ConfigTest, WrongTypeSaysExpectedAndFound) {
  auto e = error_of(base() + "train:\n  epochs: many\n");
  EXPECT_EQ(e.key(), "train.epochs");
  EXPECT_EQ(e.line(), 7);
  EXPECT_THAT(e.what(), HasSubstr("expected an integer, found 'many'"));
  auto f = error_of(base() + "model:\n  text_encoder: [1, 2]\n");
  EXPECT_EQ(f.key(), "model.text_encoder");
  EXPECT_THAT(f.what(), HasSubstr("expected a mapping"));
  auto g = error_of(base() + "model:\n  head: {hidden: 5}\n");
  EXPECT_EQ(g.key(), "model.head.hidden");
  EXPECT_THAT(g.what(), HasSubstr("expected a list, found '5'"));
}

TEST_F(ConfigTest, OutOfRangeValue) {
  auto e = error_of(base() + "train:\n  optimizer: {lr: -0.1}\n");
  EXPECT_EQ(e.key(), "train.optimizer.lr");
  EXPECT_THAT(e.what(), HasSubstr("out of range"));
  auto f = error_of(base() + "model:\n  text_encoder: {dropout: 1.5}\n");
  EXPECT_EQ(f.key(), "model.text_encoder.dropout");
}

TEST_F(ConfigTest, BadChoice) {
  auto e = error_of(base() + "model:\n  text_encoder: {type: transformer}\n");
  EXPECT_EQ(e.key(), "model.text_encoder.type");
  EXPECT_THAT(e.what(), HasSubstr("'transformer' is not one of: lstm, gru"));
}

TEST_F(ConfigTest, MissingFileNamesKeyAndPath) {
  auto e = error_of("data:\n  train: nowhere.jsonl\n");
  EXPECT_EQ(e.key(), "data.train");
  EXPECT_EQ(e.line(), 2);
  EXPECT_THAT(e.what(), HasSubstr("nowhere.jsonl' does not exist"));
}

TEST_F(ConfigTest, MissingTrainSplit) {
  auto e = error_of("model: {modalities: [text]}\n");
  EXPECT_EQ(e.key(), "data.train");
}

TEST_F(ConfigTest, MalformedYamlNamesLine) {
  auto e = error_of("data:\n  train: [unclosed\n  val: x\n");
  EXPECT_GT(e.line(), 0);
  EXPECT_THAT(e.what(), HasSubstr("malformed YAML"));
}

TEST_F(ConfigTest, Overrides) {
  auto c = parse_config(base(), cfg_path(),
                        {"train.optimizer.lr=3e-4", "model.text_encoder.type=gru",
                         "model.modalities=[text]", "data.loader.batch_size=8"});
  EXPECT_DOUBLE_EQ(c.train.optimizer.lr, 3e-4);
  EXPECT_EQ(c.model.text_encoder.type(), "gru");
  EXPECT_FALSE(c.model.uses("image"));
  EXPECT_EQ(c.data.loader.batch_size, 8);
}

TEST_F(ConfigTest, BadOverridesNameTheOverride) {
  auto e = error_of(base(), {"train.optimizer.lr=abc"});
  EXPECT_EQ(e.key(), "train.optimizer.lr");
  EXPECT_THAT(e.what(), HasSubstr("command-line override 'train.optimizer.lr=abc'"));
  auto f = error_of(base(), {"train.optimzer.lr=1"});
  EXPECT_THAT(f.what(), HasSubstr("unknown key"));
  auto g = error_of(base(), {"novalue"});
  EXPECT_THAT(g.what(), HasSubstr("expected KEY=VALUE"));
  auto h = error_of(base(), {"train.epochs.x=1"});
  EXPECT_THAT(h.what(), HasSubstr("expected an integer, found a mapping"));
  auto k = error_of(base() + "train: {epochs: 3}\n", {"train.epochs.x=1"});
  EXPECT_THAT(k.what(), HasSubstr("'epochs' is not a section"));
}

TEST_F(ConfigTest, CrossFieldRules) {
  auto e = error_of("data:\n  train: train.jsonl\ntrain:\n  early_stopping: {metric: val.loss}\n");
  EXPECT_EQ(e.key(), "train.early_stopping.metric");
  EXPECT_THAT(e.what(), HasSubstr("needs data.val"));
  auto f = error_of(base() + "train:\n  early_stopping: {metric: val.f2}\n");
  EXPECT_THAT(f.what(), HasSubstr("not a reported metric"));
  auto h = error_of("data:\n  train: train.jsonl\n  val: val.jsonl\n  image: {channels: 3, mean: [0.5, 0.5]}\neval: {splits: [val]}\n");
  EXPECT_EQ(h.key(), "data.image.mean");
  auto i = error_of(base() + "model: {modalities: []}\n");
  EXPECT_EQ(i.key(), "model.modalities");
  // eval.splits names a split the config lacks, explicitly: an error, not an adaptation.
  auto j = error_of("data:\n  train: train.jsonl\neval: {splits: [val]}\n");
  EXPECT_EQ(j.key(), "eval.splits");
}

TEST_F(ConfigTest, SmallestConfigAdaptsToTheSplitsItHas) {
  // data.train alone: no early stopping, no report, no calibration, and each choice is said.
  auto c = parse_config("data:\n  train: train.jsonl\n", cfg_path());
  EXPECT_FALSE(c.train.early_stopping.enabled);
  EXPECT_TRUE(c.eval.splits.empty());
  ASSERT_EQ(c.adapted.size(), 3u);
  EXPECT_THAT(c.adapted[0], HasSubstr("early stopping is off"));
  EXPECT_THAT(c.adapted[1], HasSubstr("no report"));
  EXPECT_THAT(c.adapted[2], HasSubstr("uncalibrated"));
  // With val: everything as configured, only the missing test split is left out of the report.
  auto v = parse_config("data:\n  train: train.jsonl\n  val: val.jsonl\n", cfg_path());
  EXPECT_TRUE(v.train.early_stopping.enabled);
  EXPECT_EQ(v.eval.splits, (std::vector<std::string>{"val"}));
  ASSERT_EQ(v.adapted.size(), 1u);
  EXPECT_THAT(v.adapted[0], HasSubstr("eval.splits: [val]"));
  // A config that says what it wants gets it: explicit values are never adapted.
  auto off = parse_config("data:\n  train: train.jsonl\neval: {splits: []}\n", cfg_path(),
                          {"train.early_stopping.enabled=false"});
  ASSERT_EQ(off.adapted.size(), 2u);
  EXPECT_THAT(off.adapted[0], HasSubstr("(train.early_stopping.restore_best: false)"));
  EXPECT_THAT(off.adapted[1], HasSubstr("uncalibrated"));
  auto explicit_best = error_of("data:\n  train: train.jsonl\ntrain: {early_stopping: {restore_best: true}}\n");
  EXPECT_EQ(explicit_best.key(), "train.early_stopping.metric");
  EXPECT_THAT(explicit_best.what(), HasSubstr("restore_best tracks it"));
  // The full config (val, test, early stopping on val) is not adapted at all.
  dir_.write("test.jsonl", "{\"text\": \"hi\", \"image\": \"a.png\", \"label\": \"x\"}\n");
  auto full = parse_config("data: {train: train.jsonl, val: val.jsonl, test: test.jsonl}\n", cfg_path());
  EXPECT_TRUE(full.adapted.empty());
}

TEST_F(ConfigTest, EffectiveConfigRoundTrips) {
  auto c = parse_config(base() + "train: {optimizer: {lr: 0.0003}, epochs: 7}\n", cfg_path(),
                        {"model.text_encoder.type=gru"});
  const std::string yaml = mmintent::to_yaml(c);
  auto d = parse_config(yaml, (dir_.path() / "elsewhere" / "config.yaml").string());
  EXPECT_EQ(mmintent::to_yaml(d), yaml);
  EXPECT_DOUBLE_EQ(d.train.optimizer.lr, 0.0003);
  EXPECT_EQ(d.train.epochs, 7);
  EXPECT_EQ(d.model.text_encoder.type(), "gru");
  EXPECT_EQ(d.data.train, train_);
}

TEST_F(ConfigTest, TextAugmentationAndAdversarialTrainingParseAndRoundTrip) {
  // Off by default.
  auto plain = parse_config(base(), cfg_path());
  EXPECT_EQ(plain.train.adversarial.method, "none");
  EXPECT_FALSE(plain.data.augment.text.any());
  EXPECT_DOUBLE_EQ(plain.train.adversarial.weight, 1.0);
  auto c = parse_config("data:\n  train: train.jsonl\n  val: val.jsonl\n  augment:\n    enabled: true\n"
                        "    text: {typos: 0.1, deletion: 0.05, swap: 0.02, token_dropout: 0.15}\n"
                        "eval:\n  splits: [val]\ntrain:\n  adversarial: {method: pgd, epsilon: 0.5, steps: 4, alpha: 0.2, modalities: [text], weight: 0.7}\n",
                        cfg_path());
  EXPECT_DOUBLE_EQ(c.data.augment.text.typos, 0.1);
  EXPECT_DOUBLE_EQ(c.data.augment.text.deletion, 0.05);
  EXPECT_DOUBLE_EQ(c.data.augment.text.swap, 0.02);
  EXPECT_DOUBLE_EQ(c.data.augment.text.token_dropout, 0.15);
  const auto& a = c.train.adversarial;
  EXPECT_EQ(a.method, "pgd");
  EXPECT_DOUBLE_EQ(a.epsilon, 0.5);
  EXPECT_EQ(a.steps, 4);
  EXPECT_DOUBLE_EQ(a.alpha, 0.2);
  EXPECT_EQ(a.modalities, (std::vector<std::string>{"text"}));
  EXPECT_DOUBLE_EQ(a.weight, 0.7);
  EXPECT_EQ(c.trainer_options().adversarial.method, "pgd");
  const std::string yaml = mmintent::to_yaml(c);
  EXPECT_THAT(yaml, HasSubstr("token_dropout: 0.15"));
  EXPECT_THAT(yaml, HasSubstr("adversarial:"));
  auto d = parse_config(yaml, (dir_.path() / "elsewhere" / "config.yaml").string());
  EXPECT_EQ(mmintent::to_yaml(d), yaml);
  EXPECT_EQ(d.train.adversarial.modalities, a.modalities);
  EXPECT_DOUBLE_EQ(d.data.augment.text.token_dropout, 0.15);
  // The defaults round-trip too (an empty modalities list included).
  const std::string defaults = mmintent::to_yaml(plain);
  EXPECT_EQ(mmintent::to_yaml(parse_config(defaults, (dir_.path() / "x" / "config.yaml").string())), defaults);
}

TEST_F(ConfigTest, BadTextAugmentationAndAdversarialValuesNameTheKey) {
  for (const char* key : {"typos", "deletion", "swap", "token_dropout"}) {
    for (const char* value : {"1.5", "-0.1"}) {
      auto e = error_of(std::string("data:\n  train: train.jsonl\n  val: val.jsonl\n  augment:\n    text:\n      ") +
                        key + ": " + value + "\neval:\n  splits: [val]\n");
      EXPECT_EQ(e.key(), std::string("data.augment.text.") + key);
      EXPECT_THAT(e.what(), HasSubstr("out of range"));
      EXPECT_THAT(e.what(), HasSubstr("cfg.yaml"));
      EXPECT_EQ(e.line(), 6);
    }
  }
  const auto adversarial = [&](const std::string& body) {
    return error_of(base() + "train:\n  adversarial: {" + body + "}\n");
  };
  auto m = adversarial("method: fsgm");
  EXPECT_EQ(m.key(), "train.adversarial.method");
  EXPECT_THAT(m.what(), HasSubstr("not one of: none, fgm, pgd"));
  EXPECT_EQ(adversarial("method: fgm, epsilon: 0").key(), "train.adversarial.epsilon");
  EXPECT_EQ(adversarial("method: fgm, epsilon: -1").key(), "train.adversarial.epsilon");
  EXPECT_EQ(adversarial("method: pgd, steps: 0").key(), "train.adversarial.steps");
  EXPECT_EQ(adversarial("method: pgd, alpha: 0").key(), "train.adversarial.alpha");
  EXPECT_EQ(adversarial("method: fgm, weight: -1").key(), "train.adversarial.weight");
  auto u = adversarial("method: fgm, modalities: [txt]");
  EXPECT_EQ(u.key(), "train.adversarial.modalities[0]");
  // A modality the model does not use (cross-field).
  auto n = error_of(base() + "model: {modalities: [text]}\ntrain:\n  adversarial: {method: fgm, modalities: [image]}\n");
  EXPECT_EQ(n.key(), "train.adversarial.modalities");
  EXPECT_THAT(n.what(), HasSubstr("'image' is not a modality of the model"));
  auto t = error_of(base() + "train:\n  adversarial: {method: fgm, modalities: [text, text]}\n");
  EXPECT_EQ(t.key(), "train.adversarial.modalities");
  // From the command line: the override is named.
  auto o = error_of(base(), {"train.adversarial.method=fast"});
  EXPECT_EQ(o.key(), "train.adversarial.method");
  EXPECT_THAT(o.what(), HasSubstr("train.adversarial.method=fast"));
}

TEST_F(ConfigTest, OutOfScopeScoresAndMethodBoth) {
  auto c = parse_config(base() + "oos: {label: oos, method: both, score: mahalanobis}\n", cfg_path());
  EXPECT_EQ(c.oos.method, "both");
  EXPECT_EQ(c.oos.score, "mahalanobis");
  EXPECT_EQ(parse_config(base(), cfg_path()).oos.score, "max_prob");  // the default
  auto bad = error_of(base() + "oos: {label: oos, score: logits}\n");
  EXPECT_EQ(bad.key(), "oos.score");
  EXPECT_THAT(bad.what(), HasSubstr("not one of: max_prob, energy, mahalanobis"));
  EXPECT_EQ(error_of(base() + "oos: {label: oos, method: all}\n").key(), "oos.method");
  // A fixed threshold is a top probability: other scores' thresholds are chosen on val.
  auto fixed = error_of(base() + "oos: {label: oos, method: threshold, score: energy, threshold: 0.5}\n");
  EXPECT_EQ(fixed.key(), "oos.threshold");
  EXPECT_THAT(fixed.what(), HasSubstr("energy"));
  EXPECT_EQ(parse_config(base() + "oos: {label: oos, method: both, threshold: 0.3}\n", cfg_path()).oos.threshold, 0.3);
}

TEST_F(ConfigTest, SplitCalibrationNeedsATrainedOutOfScopeClass) {
  auto c = parse_config(base() + "oos: {label: oos}\ncalibration: {method: split, oos_share: 0.18}\n", cfg_path());
  EXPECT_EQ(c.calibration.method, "split");
  EXPECT_DOUBLE_EQ(c.calibration.oos_share, 0.18);
  EXPECT_EQ(parse_config(base(), cfg_path()).calibration.oos_share, -1);  // the fitting split's share
  EXPECT_EQ(parse_config(base() + "oos: {label: oos, method: both}\ncalibration: {method: split}\n", cfg_path())
                .calibration.method,
            "split");
  for (const std::string& text : {std::string("calibration: {method: split}\n"),
                                  std::string("oos: {label: oos, method: threshold}\ncalibration: {method: split}\n"),
                                  std::string("oos: {label: oos}\ncalibration: {method: split}\nensemble: {members: 3}\n")}) {
    const auto e = error_of(base() + text);
    EXPECT_EQ(e.key(), "calibration.method") << text;
  }
  for (const std::string& text : {std::string("oos: {label: oos}\ncalibration: {method: split, oos_share: 1}\n"),
                                  std::string("oos: {label: oos}\ncalibration: {method: split, oos_share: 0}\n"),
                                  std::string("oos: {label: oos}\ncalibration: {oos_share: 0.2}\n")}) {
    EXPECT_EQ(error_of(base() + text).key(), "calibration.oos_share") << text;
  }
}

TEST_F(ConfigTest, LoadConfigMissingFile) {
  try {
    mmintent::load_config((dir_.path() / "absent.yaml").string());
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("absent.yaml"));
  }
}

}  // namespace
