#include "mmintent/data/label_map.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <stdexcept>

#include "mmintent/error.h"
#include "support/support.h"

namespace mmintent {
namespace {

using test::TempDir;

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

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(LabelMapTest, FromLabelsSortsAndDeduplicates) {
  const LabelMap map = LabelMap::from_labels({"weather", "alarm", "weather", "Zoo", "alarm"});
  EXPECT_EQ(map.size(), 3);
  EXPECT_EQ(map.names(), (std::vector<std::string>{"Zoo", "alarm", "weather"}));  // byte order
  EXPECT_EQ(map.find("alarm"), 1);
  EXPECT_EQ(map.find("nope"), -1);
  EXPECT_EQ(map.index("weather", "x.jsonl:3"), 2);
  EXPECT_EQ(map.name(0), "Zoo");
  EXPECT_THROW(map.name(3), std::out_of_range);
  EXPECT_THROW(map.name(-1), std::out_of_range);
  EXPECT_THROW(LabelMap::from_labels({"a", ""}), Error);
  EXPECT_THROW(LabelMap::from_labels({"a\xFF"}), Error);
  EXPECT_EQ(LabelMap().size(), 0);
}

TEST(LabelMapTest, SaveLoadRoundTrip) {
  TempDir dir;
  const LabelMap map = LabelMap::from_labels({"b", "a \"quoted\"", "caf\xC3\xA9", "7"});
  const std::string path = (dir.path() / "labels.json").string();
  map.save(path);
  const LabelMap loaded = LabelMap::load(path);
  EXPECT_EQ(loaded.names(), map.names());
  EXPECT_EQ(loaded.find("caf\xC3\xA9"), map.find("caf\xC3\xA9"));
  // Only the final file remains (the temporary was renamed).
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
  // Saving again overwrites.
  LabelMap::from_labels({"x"}).save(path);
  EXPECT_EQ(LabelMap::load(path).names(), std::vector<std::string>{"x"});
  EXPECT_THROW(map.save((dir.path() / "no/such/dir/labels.json").string()), Error);
}

TEST(LabelMapTest, LoadsTextFileKeepingOrder) {
  TempDir dir;
  const std::string path = dir.write("labels.txt", "\xEF\xBB\xBFzeta\r\n\n  \nalpha\nmid dle\n");
  const LabelMap map = LabelMap::load(path);
  EXPECT_EQ(map.names(), (std::vector<std::string>{"zeta", "alpha", "mid dle"}));
  EXPECT_EQ(map.find("alpha"), 1);
}

TEST(LabelMapTest, LoadErrorsNameFileAndLine) {
  TempDir dir;
  const std::string dup_txt = dir.write("d.txt", "a\nb\n\na\n");
  DataError e = data_error([&] { LabelMap::load(dup_txt); });
  EXPECT_EQ(e.file(), dup_txt);
  EXPECT_EQ(e.line(), 4);
  EXPECT_TRUE(contains(e.what(), "duplicate label 'a' (first at line 1)")) << e.what();

  const std::string dup_json = dir.write("d.json", "[\n  \"a\",\n  \"b\",\n  \"a\"\n]\n");
  e = data_error([&] { LabelMap::load(dup_json); });
  EXPECT_EQ(e.line(), 4);
  EXPECT_TRUE(contains(e.what(), "duplicate label 'a' (first at line 2)")) << e.what();

  const std::string empty_json = dir.write("e.json", "[\"a\",\n\"\"]");
  e = data_error([&] { LabelMap::load(empty_json); });
  EXPECT_EQ(e.line(), 2);
  EXPECT_TRUE(contains(e.what(), "empty label")) << e.what();

  const std::string not_string = dir.write("n.json", "[\"a\", {\"b\": [1, \"c\"]},\n 3]");
  e = data_error([&] { LabelMap::load(not_string); });
  EXPECT_EQ(e.line(), 1);
  EXPECT_TRUE(contains(e.what(), "label #1 must be a string, found object")) << e.what();

  const std::string not_array = dir.write("o.json", "{\"a\": 1}");
  e = data_error([&] { LabelMap::load(not_array); });
  EXPECT_TRUE(contains(e.what(), "expected a JSON array of strings, found object")) << e.what();

  const std::string bad_json = dir.write("b.json", "[\"a\",\n\"b\"\n\"c\"]");
  e = data_error([&] { LabelMap::load(bad_json); });
  EXPECT_EQ(e.line(), 3);
  EXPECT_TRUE(contains(e.what(), "not valid JSON")) << e.what();

  const std::string bad_utf8 = dir.write("u.txt", "ok\nab\xFF\n");
  e = data_error([&] { LabelMap::load(bad_utf8); });
  EXPECT_EQ(e.line(), 2);
  EXPECT_TRUE(contains(e.what(), "byte offset 2")) << e.what();

  const std::string none = dir.write("none.txt", "\n\n");
  EXPECT_THROW(LabelMap::load(none), DataError);
  const std::string missing = (dir.path() / "missing.json").string();
  e = data_error([&] { LabelMap::load(missing); });
  EXPECT_EQ(e.file(), missing);
  EXPECT_TRUE(contains(e.what(), "cannot open label map")) << e.what();
}

TEST(LabelMapTest, UnknownLabelNamesWhereAndLabel) {
  const LabelMap map = LabelMap::from_labels({"greet", "bye"});
  DataError e = data_error([&] { map.index("hello", "data/val.jsonl:12"); });
  EXPECT_EQ(e.file(), "data/val.jsonl");
  EXPECT_EQ(e.line(), 12);
  EXPECT_EQ(std::string(e.what()),
            "data/val.jsonl:12: unknown label 'hello' (the label map has 2 labels: 'bye', "
            "'greet')");
  e = data_error([&] { map.index("hello", "stdin"); });
  EXPECT_EQ(e.file(), "stdin");
  EXPECT_EQ(e.line(), 0);
}

}  // namespace
}  // namespace mmintent
