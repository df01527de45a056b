// A modality registered from outside the library (run/plugins.h): the config accepts it and
// checks its settings, manifests and data sets read it, the classifier fuses it with the
// built-ins and masks it where a sample lacks it.

#include "mmintent/config/loader.h"
#include "mmintent/data/dataset.h"
#include "mmintent/error.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/run/plugins.h"
#include "support/support.h"
#include "support/synthetic.h"

#include <gmock/gmock.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <sstream>

namespace mmintent {
namespace {

using ::testing::HasSubstr;

/// "numbers": a JSON list of `dim` numbers per record.
class NumbersReader : public ModalityReader {
 public:
  explicit NumbersReader(int64_t dim) : dim_(dim) {}
  std::vector<std::string> prepare(const std::vector<std::string>& values,
                                   const std::vector<long>&) override {
    std::vector<std::string> errors(values.size());
    rows_.assign(values.size(), {});
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i].empty()) continue;
      auto j = nlohmann_like_parse(values[i]);
      if (static_cast<int64_t>(j.size()) != dim_) errors[i] = "numbers: expected " + std::to_string(dim_) + " numbers";
      else rows_[i] = j;
    }
    return errors;
  }
  void retain(const std::vector<char>& keep) override { retain_where(rows_, keep); }
  bool present(int64_t i) const override { return !rows_.at(i).empty(); }
  ModalityInput collate(const std::vector<int64_t>& indices, const AugmentOptions*, uint64_t) const override {
    const auto B = static_cast<int64_t>(indices.size());
    ModalityInput in;
    in.data = torch::zeros({B, dim_});
    in.mask = torch::zeros({B});
    for (int64_t b = 0; b < B; ++b) {
      const auto& row = rows_.at(indices[b]);
      if (row.empty()) continue;
      in.data[b] = torch::tensor(row);
      in.mask[b] = 1.f;
    }
    return in;
  }

 private:
  /// "[1, 2.5, 3]" -> {1, 2.5, 3}; anything unparsable -> {} (reported as a wrong count).
  static std::vector<float> nlohmann_like_parse(const std::string& s) {
    std::vector<float> out;
    if (s.size() < 2 || s.front() != '[' || s.back() != ']') return out;
    std::stringstream in(s.substr(1, s.size() - 2));
    for (std::string item; std::getline(in, item, ',');) {
      char* end = nullptr;
      const float v = std::strtof(item.c_str(), &end);
      if (end == item.c_str()) return {};
      out.push_back(v);
    }
    return out;
  }
  int64_t dim_;
  std::vector<std::vector<float>> rows_;
};

class NumbersEncoderImpl : public ModalityEncoderImpl {
 public:
  explicit NumbersEncoderImpl(int64_t dim) { fc_ = register_module("fc", torch::nn::Linear(dim, 5)); }
  torch::Tensor encode(const ModalityInput& in) override { return torch::tanh(fc_->forward(in.data)); }
  int64_t output_dim() const override { return 5; }

 private:
  torch::nn::Linear fc_{nullptr};
};

int64_t dim_of(const ModalitySettings& s) { return s.integer("dim", 3, 1, 64); }

void register_numbers() {
  static std::once_flag once;
  std::call_once(once, [] {
    ModalityPlugin p;
    p.name = "numbers";
    p.check = [](const ModalitySettings& s) {
      s.check_keys({"dim"});
      dim_of(s);
    };
    p.reader = [](const ReaderContext& c) { return std::make_unique<NumbersReader>(dim_of(c.settings)); };
    p.encoder = [](const EncoderContext& c) { return std::make_shared<NumbersEncoderImpl>(dim_of(c.settings)); };
    register_modality(std::move(p));
  });
}

class PluginTest : public test::SeededTest {
 protected:
  void SetUp() override {
    test::SeededTest::SetUp();
    register_numbers();
  }
  test::TempDir dir_;
};

TEST_F(PluginTest, RegistrationRejectsBadOrTakenNames) {
  ModalityPlugin p;
  p.reader = [](const ReaderContext&) { return std::make_unique<NumbersReader>(1); };
  p.encoder = [](const EncoderContext&) { return std::make_shared<NumbersEncoderImpl>(1); };
  for (const std::string name : {"numbers", "text", "image", "Audio", "", "9lives"}) {
    p.name = name;
    EXPECT_THROW(register_modality(p), Error) << name;
  }
  p.name = "no_reader";
  p.reader = nullptr;
  EXPECT_THROW(register_modality(p), Error);
  // Nothing of a refused registration remains.
  const auto names = modality_names();
  EXPECT_EQ(std::count(names.begin(), names.end(), "no_reader"), 0);
  EXPECT_EQ(canonical_order({"numbers", "image", "text"}),
            (std::vector<std::string>{"text", "image", "numbers"}));
}

TEST_F(PluginTest, ConfigAcceptsTheModalityAndChecksItsSettings) {
  dir_.write("train.jsonl", "{\"text\": \"hi\", \"numbers\": [1, 2], \"label\": \"x\"}\n");
  const std::string cfg = (dir_.path() / "cfg.yaml").string();
  dir_.write("val.jsonl", "{\"text\": \"hi\", \"numbers\": [1, 2], \"label\": \"x\"}\n");
  const std::string base = "data:\n  train: train.jsonl\n  val: val.jsonl\neval: {splits: [val]}\n";
  const auto c = parse_config(base + "model:\n  modalities: [text, numbers]\n  plugins:\n    numbers: {dim: 2}\n", cfg);
  EXPECT_TRUE(c.model.uses("numbers"));
  EXPECT_EQ(c.model.plugins.at("numbers").values.at("dim"), "2");
  EXPECT_EQ(c.model.plugins.at("numbers").field(), "numbers");
  // Round trip through the writer (the run directory's config.yaml).
  const auto again = parse_config(to_yaml(c), cfg);
  EXPECT_EQ(again.model.plugins.at("numbers").values, c.model.plugins.at("numbers").values);

  auto error_of = [&](const std::string& yaml, const std::vector<std::string>& overrides = {}) {
    try {
      parse_config(yaml, cfg, overrides);
    } catch (const ConfigError& e) {
      return std::make_pair(e.key(), std::string(e.what()));
    }
    return std::make_pair(std::string("<none>"), std::string());
  };
  auto [key, what] = error_of(base + "model:\n  modalities: [text, numbers]\n  plugins:\n    numbers: {dimm: 2}\n");
  EXPECT_EQ(key, "model.plugins.numbers.dimm");
  EXPECT_THAT(what, HasSubstr("known keys: field, allow_missing, dim"));
  EXPECT_THAT(what, HasSubstr("cfg.yaml:8"));
  std::tie(key, what) = error_of(base, {"model.modalities=[text, numbers]", "model.plugins.numbers.dim=0"});
  EXPECT_EQ(key, "model.plugins.numbers.dim");
  EXPECT_THAT(what, HasSubstr("out of range"));
  std::tie(key, what) = error_of(base + "model:\n  modalities: [text, video]\n");
  EXPECT_EQ(key, "model.modalities[1]");
  EXPECT_THAT(what, HasSubstr("numbers"));  // the message lists the registered modalities
  std::tie(key, what) = error_of(base + "model:\n  plugins:\n    numbers: {dim: 2}\n");
  EXPECT_EQ(key, "model.plugins.numbers");
  std::tie(key, what) = error_of(base + "model:\n  modalities: [text]\n  plugins:\n    text: {dim: 2}\n");
  EXPECT_EQ(key, "model.plugins.text");
}

TEST_F(PluginTest, ManifestAndDatasetReadTheField) {
  const auto path = dir_.write("m.jsonl",
                               "{\"text\": \"a\", \"nums\": [1, 2, 3], \"label\": \"x\"}\n"
                               "{\"text\": \"b\", \"label\": \"x\"}\n"
                               "{\"text\": \"c\", \"nums\": [4, 5], \"label\": \"x\"}\n");
  ManifestReadOptions ro;
  ro.fields.image.clear();
  ro.fields.plugins["numbers"] = "nums";
  try {
    read_manifest(path, ro);
    ADD_FAILURE() << "a record without the field was accepted";
  } catch (const DataError& e) {
    EXPECT_EQ(e.line(), 2);
    EXPECT_THAT(e.what(), HasSubstr("missing field 'nums' (numbers)"));
  }
  ro.allow_missing_plugins.insert("numbers");
  const Manifest m = read_manifest(path, ro);
  ASSERT_EQ(m.records.size(), 3u);
  EXPECT_EQ(m.records[0].inputs.at("numbers"), "[1,2,3]");
  EXPECT_EQ(m.records[1].inputs.count("numbers"), 0u);

  DatasetOptions o;
  o.modalities = {"numbers"};
  o.plugins["numbers"].values["dim"] = "3";
  // Record 3 has two numbers: an error naming its line, or a skip.
  try {
    MultimodalDataset(m, nullptr, nullptr, o);
    ADD_FAILURE() << "a bad value was accepted";
  } catch (const DataError& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_THAT(e.what(), HasSubstr("expected 3 numbers"));
  }
  o.on_bad_sample = "skip";
  const MultimodalDataset d(m, nullptr, nullptr, o);
  ASSERT_EQ(d.size(), 2);
  ASSERT_EQ(d.skipped().size(), 1u);
  EXPECT_TRUE(d.has("numbers", 0));
  EXPECT_FALSE(d.has("numbers", 1));
  const Batch b = d.collate({0, 1}, nullptr, 0);
  EXPECT_EQ(b.inputs.size(), 1u);
  EXPECT_TRUE(b.input("numbers").data.equal(torch::tensor({1.f, 2.f, 3.f, 0.f, 0.f, 0.f}).view({2, 3})));
  EXPECT_TRUE(b.input("numbers").mask.equal(torch::tensor({1.f, 0.f})));
}

TEST_F(PluginTest, ClassifierFusesThreeModalitiesAndMasksTheMissingOne) {
  for (const std::string fusion : {"concat", "gated"}) {
    IntentClassifierOptions o;
    o.num_classes(4).modalities({"numbers", "image", "text"});
    o.text(TextEncoderOptions().vocab_size(30).embedding_dim(8).hidden_size(6));
    o.image(ImageEncoderOptions().channels({4}).out_dim(6));
    o.fusion(FusionOptions().type(fusion).dim(7));
    o.head(HeadOptions().hidden({8}).dropout(0.0));
    o.plugins({{"numbers", ModalitySettings{"numbers", {{"dim", "3"}}}}});
    IntentClassifier model(o);
    model->eval();
    EXPECT_EQ(model->modalities(), (std::vector<std::string>{"text", "image", "numbers"}));
    const auto params = model->named_parameters();
    EXPECT_TRUE(params.contains("numbers_encoder.fc.weight")) << fusion;

    test::SyntheticSource src(3, 3, 4, false);
    Batch batch = src.all();
    batch.inputs["numbers"].data = torch::randn({3, 3});
    batch.inputs["numbers"].mask = torch::tensor({1.f, 0.f, 1.f});
    const auto before = model->forward(batch);
    EXPECT_EQ(before.sizes(), (c10::IntArrayRef{3, 4}));
    Batch changed = batch;
    changed.inputs["numbers"].data = batch.input("numbers").data * 5 + 1;
    const auto after = model->forward(changed);
    EXPECT_TRUE(torch::allclose(before[1], after[1], 1e-6, 1e-6)) << fusion << ": masked sample changed";
    EXPECT_FALSE(torch::allclose(before[0], after[0], 1e-6, 1e-6)) << fusion << ": the modality is not read";

    Batch lacking = batch;
    lacking.inputs.erase("numbers");
    EXPECT_THROW(model->forward(lacking), c10::Error);
  }
}

}  // namespace
}  // namespace mmintent
