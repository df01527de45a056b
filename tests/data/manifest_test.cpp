#include "mmintent/data/manifest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "mmintent/error.h"
#include "support/support.h"

namespace mmintent {
namespace {

using test::TempDir;

/// Runs `fn`, expecting a DataError whose message contains every string in `parts`.
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
    if (line > 0) {
      EXPECT_NE(what.find(file + ":" + std::to_string(line) + ":"), std::string::npos) << what;
    }
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << what;
  }
}

Manifest read(const std::string& path, ManifestReadOptions options = {}) {
  return read_manifest(path, options);
}

TEST(ManifestTest, ParsesFormatNames) {
  EXPECT_EQ(parse_manifest_format("auto"), ManifestFormat::automatic);
  EXPECT_EQ(parse_manifest_format("jsonl"), ManifestFormat::jsonl);
  EXPECT_EQ(parse_manifest_format("csv"), ManifestFormat::csv);
  EXPECT_EQ(parse_manifest_format("tsv"), ManifestFormat::tsv);
  EXPECT_THROW(parse_manifest_format("xml"), Error);
}

TEST(ManifestTest, JsonlHappyPathResolvesRelativeImages) {
  TempDir dir;
  const std::string path =
      dir.write("data/train.jsonl",
                "{\"text\": \"book a flight\", \"image\": \"img/a.png\", \"label\": \"travel\"}\n"
                "\n"
                "   \n"
                "{\"text\": \"caf\\u00e9 hours\", \"image\": \"/abs/b.png\", \"label\": 7}\r\n"
                "{\"label\": \"x\", \"image\": \"c.png\", \"text\": \"null image next\", "
                "\"extra\": [1,2]}\n");
  const Manifest m = read(path);
  EXPECT_EQ(m.path, path);
  ASSERT_EQ(m.records.size(), 3u);
  EXPECT_TRUE(m.skipped.empty());
  const std::string base = (dir.path() / "data").string();
  EXPECT_EQ(m.records[0].text, "book a flight");
  EXPECT_EQ(m.records[0].image, (std::filesystem::path(base) / "img/a.png").string());
  EXPECT_EQ(m.records[0].label, "travel");
  EXPECT_EQ(m.records[0].line, 1);
  EXPECT_EQ(m.records[1].text, "caf\xC3\xA9 hours");
  EXPECT_EQ(m.records[1].image, "/abs/b.png");
  EXPECT_EQ(m.records[1].label, "7");
  EXPECT_EQ(m.records[1].line, 4);
  EXPECT_EQ(m.records[2].line, 5);
}

TEST(ManifestTest, JsonlMissingModalitiesAndCustomFields) {
  TempDir dir;
  const std::string path =
      dir.write("m.jsonl",
                "{\"utterance\": \"hi\", \"intent\": \"greet\"}\n"
                "{\"utterance\": null, \"picture\": \"p.png\", \"intent\": \"greet\"}\n"
                "{\"utterance\": \"  \\t \", \"picture\": null}\n");
  ManifestReadOptions options;
  options.fields.text = "utterance";
  options.fields.image = "picture";
  options.fields.label = "intent";
  options.allow_missing_text = true;
  options.allow_missing_image = true;
  options.require_label = false;
  const Manifest m = read(path, options);
  ASSERT_EQ(m.records.size(), 3u);
  EXPECT_EQ(m.records[0].image, "");
  EXPECT_EQ(m.records[1].text, "");
  EXPECT_EQ(m.records[1].image, (dir.path() / "p.png").string());
  EXPECT_EQ(m.records[2].text, "");  // whitespace-only counts as empty
  EXPECT_EQ(m.records[2].label, "");

  // An empty field name means "not read".
  options.fields.image = "";
  options.allow_missing_image = false;
  EXPECT_EQ(read(path, options).records[1].image, "");
}

TEST(ManifestTest, JsonlErrorsNameFileAndLine) {
  TempDir dir;
  auto check = [&](const std::string& second_line, std::initializer_list<std::string> parts,
                   ManifestReadOptions options = {}) {
    const std::string path =
        dir.write("e.jsonl", "{\"text\": \"ok\", \"image\": \"a.png\", \"label\": \"l\"}\n" +
                                 second_line + "\n");
    expect_data_error([&] { read(path, options); }, path, 2, parts);
  };
  check("{\"text\": \"ok\", \"image\": \"a.png\", \"label\": }", {"not valid JSON"});
  check("not json at all", {"not valid JSON"});
  check("[1, 2, 3]", {"expected a JSON object", "array"});
  check("\"just a string\"", {"expected a JSON object", "string"});
  check("{\"image\": \"a.png\", \"label\": \"l\"}", {"missing field 'text'"});
  check("{\"text\": \"ok\", \"label\": \"l\"}", {"missing field 'image'"});
  check("{\"text\": \"ok\", \"image\": \"a.png\"}", {"missing field 'label'"});
  check("{\"text\": \"ok\", \"image\": \"a.png\", \"label\": null}", {"empty label", "'label'"});
  check("{\"text\": \" \", \"image\": \"a.png\", \"label\": \"l\"}", {"empty text", "'text'"});
  check("{\"text\": \"ok\", \"image\": \"\", \"label\": \"l\"}", {"empty image path", "'image'"});
  check("{\"text\": 5, \"image\": \"a.png\", \"label\": \"l\"}",
        {"field 'text'", "string", "number"});
  check("{\"text\": \"ok\", \"image\": [\"a\"], \"label\": \"l\"}", {"field 'image'", "array"});
  check("{\"text\": \"ok\", \"image\": \"a.png\", \"label\": 1.5}",
        {"field 'label'", "integer", "number"});
  check("{\"text\": \"ok\", \"image\": \"a.png\", \"label\": true}", {"field 'label'", "boolean"});
  // Raw invalid UTF-8 inside the text: offset 3 of the decoded text ("ab\"" is 3 bytes).
  check(
      "{\"text\": \"ab\\\"\xFF"
      "cd\", \"image\": \"a.png\", \"label\": \"l\"}",
      {"field 'text'", "not valid UTF-8", "byte offset 3 in the text"});
  // Truncated multi-byte sequence (C3 followed by ASCII) at offset 1.
  check(
      "{\"text\": \"x\xC3"
      "y\", \"image\": \"a.png\", \"label\": \"l\"}",
      {"not valid UTF-8", "byte offset 1 in the text"});
}

TEST(ManifestTest, JsonlSkipModeCollectsBadRecords) {
  TempDir dir;
  const std::string path = dir.write("s.jsonl",
                                     "{\"text\": \"a\", \"image\": \"a.png\", \"label\": \"x\"}\n"
                                     "oops\n"
                                     "{\"text\": \"b\", \"image\": \"b.png\"}\n"
                                     "{\"text\": \"c\", \"image\": \"c.png\", \"label\": \"y\"}\n");
  ManifestReadOptions options;
  options.on_bad_record = "skip";
  const Manifest m = read(path, options);
  ASSERT_EQ(m.records.size(), 2u);
  EXPECT_EQ(m.records[0].label, "x");
  EXPECT_EQ(m.records[1].label, "y");
  EXPECT_EQ(m.records[1].line, 4);
  ASSERT_EQ(m.skipped.size(), 2u);
  EXPECT_EQ(m.skipped[0].rfind(path + ":2: not valid JSON", 0), 0u) << m.skipped[0];
  EXPECT_EQ(m.skipped[1].rfind(path + ":3: missing field 'label'", 0), 0u) << m.skipped[1];

  options.on_bad_record = "ignore";
  EXPECT_THROW(read(path, options), Error);
}

TEST(ManifestTest, FileLevelErrors) {
  TempDir dir;
  const std::string missing = (dir.path() / "none.jsonl").string();
  expect_data_error([&] { read(missing); }, missing, 0, {"cannot open manifest"});
  ManifestReadOptions skip;
  skip.on_bad_record = "skip";
  EXPECT_THROW(read(missing, skip), DataError);  // skip never hides file-level errors

  const std::string odd = dir.write("m.txt", "");
  expect_data_error([&] { read(odd); }, odd, 0, {"extension", ".txt"});
  ManifestReadOptions as_csv;
  as_csv.format = ManifestFormat::csv;
  EXPECT_TRUE(read(odd, as_csv).records.empty());  // explicit format; zero records is fine

  const std::string empty = dir.write("e.jsonl", "\n\n");
  EXPECT_TRUE(read(empty).records.empty());

  ManifestReadOptions contradictory;
  contradictory.fields.label = "";
  EXPECT_THROW(read(empty, contradictory), Error);
}

TEST(ManifestTest, CsvQuotingCommasAndNewlines) {
  TempDir dir;
  const std::string path = dir.write("c.csv",
                                     "label,text,image\n"
                                     "greet,\"hello, world\",a.png\n"
                                     "ask,\"she said \"\"hi\"\"\nand left\",\"b,1.png\"\n"
                                     "\n"
                                     "bye,plain,\n");
  ManifestReadOptions options;
  options.allow_missing_image = true;
  const Manifest m = read(path, options);
  ASSERT_EQ(m.records.size(), 3u);
  EXPECT_EQ(m.records[0].text, "hello, world");
  EXPECT_EQ(m.records[0].label, "greet");
  EXPECT_EQ(m.records[0].image, (dir.path() / "a.png").string());
  EXPECT_EQ(m.records[0].line, 2);
  EXPECT_EQ(m.records[1].text, "she said \"hi\"\nand left");
  EXPECT_EQ(m.records[1].image, (dir.path() / "b,1.png").string());
  EXPECT_EQ(m.records[1].line, 3);
  EXPECT_EQ(m.records[2].text, "plain");
  EXPECT_EQ(m.records[2].image, "");
  EXPECT_EQ(m.records[2].line, 6);  // the quoted newline and the blank line are counted
}

TEST(ManifestTest, TsvWithBomAndCrlf) {
  TempDir dir;
  const std::string path = dir.write("t.tsv",
                                     "\xEF\xBB\xBFtext\timage\tlabel\r\n"
                                     "a, b\tx.png\t3\r\n"
                                     "\"multi\r\nline\"\ty.png\tq\r\n");
  const Manifest m = read(path);
  ASSERT_EQ(m.records.size(), 2u);
  EXPECT_EQ(m.records[0].text, "a, b");
  EXPECT_EQ(m.records[0].label, "3");
  EXPECT_EQ(m.records[1].text, "multi\nline");
  EXPECT_EQ(m.records[1].label, "q");
  EXPECT_EQ(m.records[1].line, 3);
}

TEST(ManifestTest, CsvErrors) {
  TempDir dir;
  const std::string wrong =
      dir.write("w.csv", "text,image,label\na,b.png,l\na,b.png\nc,d.png,l,extra\n");
  expect_data_error([&] { read(wrong); }, wrong, 3, {"expected 3 fields, found 2"});
  ManifestReadOptions skip;
  skip.on_bad_record = "skip";
  const Manifest m = read(wrong, skip);
  EXPECT_EQ(m.records.size(), 1u);
  ASSERT_EQ(m.skipped.size(), 2u);
  EXPECT_NE(m.skipped[1].find(":4: expected 3 fields, found 4"), std::string::npos);

  const std::string header = dir.write("h.csv", "text,picture,label\na,b.png,l\n");
  expect_data_error([&] { read(header, skip); }, header, 1,
                    {"header lacks column 'image'", "'picture'"});

  const std::string junk = dir.write("j.csv", "text,image,label\n\"a\"x,b.png,l\n");
  expect_data_error([&] { read(junk); }, junk, 2, {"after a closing quote"});

  const std::string open_quote =
      dir.write("o.csv", "text,image,label\na,b.png,l\n\"never closed,b,l\n");
  expect_data_error([&] { read(open_quote, skip); }, open_quote, 3, {"unterminated quoted field"});

  const std::string bad_utf8 = dir.write("u.csv", "text,image,label\n\"ok \xE2\x82\",b.png,l\n");
  expect_data_error([&] { read(bad_utf8); }, bad_utf8, 2,
                    {"not valid UTF-8", "byte offset 3 in the text"});

  // A missing label column is fine when labels are not required.
  const std::string unlabeled = dir.write("n.csv", "text,image\nhi,a.png\n");
  ManifestReadOptions predict;
  predict.require_label = false;
  const Manifest p = read(unlabeled, predict);
  ASSERT_EQ(p.records.size(), 1u);
  EXPECT_EQ(p.records[0].label, "");
}

TEST(ManifestTest, FindsInvalidUtf8) {
  EXPECT_EQ(find_invalid_utf8("plain"), std::string::npos);
  EXPECT_EQ(find_invalid_utf8("\xE2\x82\xAC \xF0\x9F\x98\x80"), std::string::npos);
  EXPECT_EQ(find_invalid_utf8("ab\x80"), 2u);
  EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);          // overlong
  EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), 1u);     // surrogate
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("ok\xE2\x82"), 2u);        // truncated
}

}  // namespace
}  // namespace mmintent
