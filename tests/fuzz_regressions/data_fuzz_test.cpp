// Regressions found by fuzz/fuzz_manifest_* and fuzz/fuzz_label_map (scripts/fuzz.sh).
#include "mmintent/data/label_map.h"
#include "mmintent/data/manifest.h"
#include "mmintent/error.h"
#include "support/support.h"

#include <gmock/gmock.h>

#include <chrono>

namespace mmintent {
namespace {

using ::testing::HasSubstr;

/// The DataError thrown by `fn` (fails the test when none is thrown).
template <typename Fn>
DataError data_error(Fn&& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e;
  }
  ADD_FAILURE() << "expected a DataError";
  return DataError("", 0, "");
}

// A JSON number too large for a double makes nlohmann::json throw out_of_range (406), not
// parse_error; it escaped read_manifest and LabelMap::load as a non-mmintent exception.
TEST(DataFuzzRegressionTest, JsonlNumberOverflowIsADataError) {
  test::TempDir dir;
  const auto path = dir.write("m.jsonl",
                              "{\"text\": \"a\", \"image\": \"a.png\", \"label\": \"x\"}\n"
                              "{\"text\": \"b\", \"image\": \"b.png\", \"label\": 1e999}\n");
  const DataError e = data_error([&] { read_manifest(path, ManifestReadOptions{}); });
  EXPECT_EQ(e.line(), 2);
  EXPECT_THAT(e.what(), HasSubstr("not valid JSON"));

  ManifestReadOptions skip;
  skip.on_bad_record = "skip";
  const Manifest m = read_manifest(path, skip);
  EXPECT_EQ(m.records.size(), 1u);
  EXPECT_EQ(m.skipped.size(), 1u);
}

TEST(DataFuzzRegressionTest, CsvSoftLabelNumberOverflowIsADataError) {
  test::TempDir dir;
  const auto path = dir.write("m.csv", "text,image,label\na,a.png,\"{\"\"x\"\": 1e999}\"\n");
  const DataError e = data_error([&] { read_manifest(path, ManifestReadOptions{}); });
  EXPECT_EQ(e.line(), 2);
}

TEST(DataFuzzRegressionTest, LabelMapNumberOverflowIsADataError) {
  test::TempDir dir;
  const auto path = dir.write("labels.json", "[\"a\", -11e308]");
  const DataError e = data_error([&] { LabelMap::load(path); });
  EXPECT_THAT(e.what(), HasSubstr("not valid JSON"));
}

// Finding each element's line rescanned the file from the start, so loading a JSON label map
// was quadratic: 20k labels took minutes in the fuzz build. 100k labels now load in about a
// second (the bound is loose for sanitizer builds; the old code needed minutes).
TEST(DataFuzzRegressionTest, LargeJsonLabelMapLoadsInLinearTime) {
  test::TempDir dir;
  std::string text = "[\n";
  for (int i = 0; i < 100000; ++i) text += (i ? ",\n" : "") + ("\"label_" + std::to_string(i) + "\"");
  text += "\n]\n";
  const auto path = dir.write("labels.json", text);
  const auto start = std::chrono::steady_clock::now();
  const LabelMap map = LabelMap::load(path);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(map.size(), 100000);
  EXPECT_LT(seconds, 10.0);
  // Lines are still right: a duplicate near the end names both lines.
  const auto dup = dir.write("dup.json", "[\n\"a\",\n\"b\",\n\"a\"\n]");
  const DataError e = data_error([&] { LabelMap::load(dup); });
  EXPECT_EQ(e.line(), 4);
  EXPECT_THAT(e.what(), HasSubstr("first at line 2"));
}

}  // namespace
}  // namespace mmintent
