// Soft labels: a probability distribution over intents in a manifest's label field (JSONL
// object; in CSV/TSV a cell holding a JSON object), checked by the reader, mapped to class
// indices by the dataset and collated into Batch::soft_targets.

#include "mmintent/data/dataset.h"
#include "mmintent/data/manifest.h"
#include "mmintent/error.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

namespace mmintent {
namespace {

using test::TempDir;

template <typename Fn>
void expect_data_error(Fn&& fn, const std::string& file, long line,
                       std::initializer_list<std::string> parts) {
  try {
    fn();
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.file(), file) << what;
    EXPECT_EQ(e.line(), line) << what;
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << what;
  }
}

/// Label-only reading: no text or image fields.
ManifestReadOptions label_only() {
  ManifestReadOptions o;
  o.fields.text = "";
  o.fields.image = "";
  return o;
}

DatasetOptions no_modalities(const std::string& unknown = "error") {
  DatasetOptions o;
  o.modalities.clear();
  o.unknown_labels = unknown;
  return o;
}

TEST(SoftLabelTest, JsonlObjectIsParsedNormalisedAndLabelledWithItsArgmax) {
  TempDir dir;
  const auto path = dir.write("train.jsonl",
                              "{\"label\": \"refund\"}\n"
                              "{\"label\": {\"refund\": 0.3, \"exchange\": 0.7}}\n"
                              "{\"label\": {\"b\": 0.5, \"a\": 0.5004, \"c\": 0}}\n");
  const Manifest m = read_manifest(path, label_only());
  ASSERT_EQ(m.records.size(), 3u);
  EXPECT_TRUE(m.records[0].soft_label.empty());
  EXPECT_EQ(m.records[0].label, "refund");

  const auto& r = m.records[1];
  EXPECT_EQ(r.line, 2);
  EXPECT_EQ(r.label, "exchange");
  ASSERT_EQ(r.soft_label.size(), 2u);  // in the intents' byte order
  EXPECT_EQ(r.soft_label[0].first, "exchange");
  EXPECT_DOUBLE_EQ(r.soft_label[0].second, 0.7);
  EXPECT_EQ(r.soft_label[1].first, "refund");
  EXPECT_DOUBLE_EQ(r.soft_label[1].second, 0.3);

  // Within 1e-3 of 1: normalised; zero entries are kept.
  const auto& s = m.records[2];
  ASSERT_EQ(s.soft_label.size(), 3u);
  double sum = 0;
  for (const auto& [k, p] : s.soft_label) sum += p;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_EQ(s.label, "a");
  EXPECT_EQ(s.soft_label[2].first, "c");
  EXPECT_EQ(s.soft_label[2].second, 0.0);
}

TEST(SoftLabelTest, TiesGoToTheFirstIntentInByteOrder) {
  TempDir dir;
  const auto path = dir.write("t.jsonl", "{\"label\": {\"zeta\": 0.5, \"alpha\": 0.5}}\n");
  EXPECT_EQ(read_manifest(path, label_only()).records[0].label, "alpha");
}

TEST(SoftLabelTest, CsvAndTsvCellsHoldingAJsonObjectAreSoftLabels) {
  TempDir dir;
  const auto csv = dir.write("t.csv",
                             "text,label\n"
                             "hello,greet\n"
                             "\"hi there\",\"{\"\"greet\"\": 0.6, \"\"bye\"\": 0.4}\"\n");
  ManifestReadOptions o;
  o.fields.image = "";
  const Manifest m = read_manifest(csv, o);
  ASSERT_EQ(m.records.size(), 2u);
  EXPECT_TRUE(m.records[0].soft_label.empty());
  EXPECT_EQ(m.records[1].label, "greet");
  ASSERT_EQ(m.records[1].soft_label.size(), 2u);
  EXPECT_DOUBLE_EQ(m.records[1].soft_label[1].second, 0.6);

  const auto tsv = dir.write("t.tsv", "text\tlabel\nhey\t{\"greet\": 1}\n");
  EXPECT_EQ(read_manifest(tsv, o).records[0].soft_label.size(), 1u);

  const auto bad = dir.write("bad.csv", "text,label\nok,greet\nhi,{greet: 1}\n");
  expect_data_error([&] { read_manifest(bad, o); }, bad, 3,
                    {"soft label in column 'label' is not a valid JSON object"});
}

TEST(SoftLabelTest, BadDistributionsAreDataErrorsNamingFileAndLine) {
  TempDir dir;
  struct Case {
    std::string label, message;
  };
  const std::vector<Case> cases = {
      {"{}", "is an empty object"},
      {"{\"a\": 0.5, \"b\": 0.4}", "the probabilities sum to 0.9, expected 1 (within 0.001)"},
      {"{\"a\": 0.7, \"b\": 0.302}", "sum to 1.002"},
      {"{\"a\": 1.5, \"b\": -0.5}", "the probability of 'b' must be >= 0, found -0.5"},
      {"{\"a\": \"0.5\", \"b\": 0.5}", "the probability of 'a' must be a number, found string"},
      {"{\"a\": true}", "must be a number, found boolean"},
      {"{\"\": 1}", "has an empty intent name"},
  };
  for (const auto& c : cases) {
    const auto path = dir.write("bad.jsonl", "{\"label\": \"ok\"}\n{\"label\": " + c.label + "}\n");
    expect_data_error([&] { read_manifest(path, label_only()); }, path, 2,
                      {"soft label in field 'label'", c.message});
  }
  // With on_bad_record: skip they are listed instead.
  auto o = label_only();
  o.on_bad_record = "skip";
  const auto path = dir.write("skip.jsonl", "{\"label\": {}}\n{\"label\": \"ok\"}\n");
  const Manifest m = read_manifest(path, o);
  EXPECT_EQ(m.records.size(), 1u);
  ASSERT_EQ(m.skipped.size(), 1u);
  EXPECT_NE(m.skipped[0].find(":1:"), std::string::npos) << m.skipped[0];
}

TEST(SoftLabelTest, DatasetMapsSoftIntentsAndCollatesSoftTargets) {
  TempDir dir;
  const auto path = dir.write("train.jsonl",
                              "{\"label\": \"a\"}\n"
                              "{\"label\": {\"b\": 0.25, \"c\": 0.75}}\n"
                              "{\"label\": \"b\"}\n");
  const auto labels = LabelMap::from_labels({"a", "b", "c"});
  MultimodalDataset d(read_manifest(path, label_only()), &labels, nullptr, no_modalities());
  ASSERT_EQ(d.size(), 3);
  EXPECT_EQ(d.label(1), 2);
  ASSERT_EQ(d.soft_label(1).size(), 2u);
  EXPECT_TRUE(d.soft_label(0).empty());

  auto hard_only = d.collate({0, 2}, nullptr, 0);
  EXPECT_FALSE(hard_only.soft_targets.defined());
  EXPECT_FALSE(hard_only.rejected.defined());

  auto b = d.collate({0, 1, 2}, nullptr, 0);
  ASSERT_TRUE(b.soft_targets.defined());
  EXPECT_TRUE(b.soft_targets.equal(torch::tensor({0.f, 0.f, 0.f, 0.f, 0.25f, 0.75f, 0.f, 0.f, 0.f}).view({3, 3})))
      << b.soft_targets;
  EXPECT_TRUE(b.labels.equal(torch::tensor({0, 2, 1}, torch::kLong)));
}

TEST(SoftLabelTest, UnknownSoftIntentFollowsUnknownLabels) {
  TempDir dir;
  const auto path = dir.write("val.jsonl",
                              "{\"label\": \"a\"}\n"
                              "{\"label\": {\"a\": 0.9, \"zz\": 0.1}}\n");
  const auto labels = LabelMap::from_labels({"a", "b"});
  expect_data_error(
      [&] { MultimodalDataset(read_manifest(path, label_only()), &labels, nullptr, no_modalities()); },
      path, 2, {"soft label intent 'zz' is not in the label map"});
  MultimodalDataset skipped(read_manifest(path, label_only()), &labels, nullptr, no_modalities("skip"));
  EXPECT_EQ(skipped.size(), 1);
  ASSERT_EQ(skipped.skipped().size(), 1u);
  EXPECT_NE(skipped.skipped()[0].find("'zz'"), std::string::npos);
}

}  // namespace
}  // namespace mmintent
