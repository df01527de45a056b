#include "mmintent/data/importers.h"

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "mmintent/data/manifest.h"
#include "mmintent/error.h"
#include "support/support.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

/// Runs `fn`, expecting a DataError for `file` whose message contains every string in `parts`.
template <typename Fn>
void expect_data_error(Fn&& fn, const std::string& file, std::initializer_list<std::string> parts) {
  try {
    fn();
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.file(), file) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "one line expected: " << what;
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << "no '" << part << "' in: " << what;
  }
}

/// Reads a written manifest back with the project's reader.
std::vector<Record> read_back(const fs::path& path, bool text) {
  ManifestReadOptions options;
  options.allow_missing_image = text;
  options.allow_missing_text = !text;
  return read_manifest(path.string(), options).records;
}

std::size_t kind(const ImportSummary& s, std::size_t split, const std::string& k) {
  const auto it = s.splits.at(split).by_kind.find(k);
  return it == s.splits.at(split).by_kind.end() ? 0 : it->second;
}

// ---------------------------------------------------------------------------------------------
// CLINC150

const char* const kClinc = R"({
  "oos_val": [["is it going to rain on mars", "oos"]],
  "val": [["what is my balance", "balance"], ["wake me at six", "alarm"]],
  "train": [["how much money do i have", "balance"], ["set an alarm", "alarm"], ["alarm for 7", "alarm"]],
  "oos_test": [["who won the cup", "oos"], ["sing a song", "oos"]],
  "test": [["balance please", "balance"]],
  "oos_train": [["tell me a joke", "oos"]]
})";

TEST(ImportTest, Clinc150IncludesOutOfScopeByDefault) {
  TempDir dir;
  dir.write("src/data_full.json", kClinc);
  const fs::path out = dir.path() / "out";
  const ImportSummary s = import_clinc150((dir.path() / "src").string(), out.string());
  ASSERT_EQ(s.splits.size(), 3u);
  EXPECT_EQ(s.splits[0].records, 4u);
  EXPECT_EQ(kind(s, 0, "in_scope"), 3u);
  EXPECT_EQ(kind(s, 0, "oos"), 1u);
  EXPECT_EQ(kind(s, 1, "oos"), 1u);
  EXPECT_EQ(s.splits[2].records, 3u);
  EXPECT_EQ(s.num_labels, 3u);  // balance, alarm, oos
  const auto train = read_back(out / "train.jsonl", true);
  ASSERT_EQ(train.size(), 4u);
  EXPECT_EQ(train[0].text, "how much money do i have");
  EXPECT_EQ(train[0].label, "balance");
  EXPECT_EQ(train[0].image, "");
  EXPECT_EQ(train[3].text, "tell me a joke");
  EXPECT_EQ(train[3].label, "oos");
  // Tiny fixture: the published counts cannot match, and the differences say so.
  const auto diff = s.count_differences();
  ASSERT_FALSE(diff.empty());
  EXPECT_EQ(diff[0].what, "train in-scope");
  EXPECT_EQ(diff[0].found, 3u);
  EXPECT_EQ(diff[0].published, 15000u);
  EXPECT_FALSE(fs::exists(out / "train.jsonl.tmp"));
}

TEST(ImportTest, Clinc150ExcludesOrRenamesOutOfScopeAndReplacesManifests) {
  TempDir dir;
  dir.write("src/data_small.json", kClinc);
  const fs::path out = dir.path() / "out";
  Clinc150ImportOptions options;
  options.variant = "small";
  options.oos_label = "out_of_scope";
  import_clinc150((dir.path() / "src").string(), out.string(), options);
  EXPECT_EQ(read_back(out / "test.jsonl", true).back().label, "out_of_scope");
  options.include_oos = false;  // rerun into the same folder
  const ImportSummary s = import_clinc150((dir.path() / "src").string(), out.string(), options);
  EXPECT_EQ(kind(s, 0, "oos"), 0u);
  EXPECT_EQ(s.splits[2].records, 1u);
  EXPECT_EQ(read_back(out / "test.jsonl", true).size(), 1u);
  EXPECT_EQ(read_back(out / "train.jsonl", true).size(), 3u);
  options.variant = "tiny";
  EXPECT_THROW(import_clinc150((dir.path() / "src").string(), out.string(), options), Error);
}

TEST(ImportTest, Clinc150MalformedRecordsNameFileOffsetAndRecord) {
  TempDir dir;
  const fs::path out = dir.path() / "out";
  const std::string good = R"("val": [], "test": [], "oos_train": [], "oos_val": [], "oos_test": [])";
  // A pair of 3 elements, at a known byte offset.
  std::string body = "{\"train\": [[\"a b\", \"x\"],\n  [\"c\", \"x\", \"extra\"]], " + good + "}";
  const std::string path = dir.write("src/data_full.json", body);
  const auto offset = std::to_string(body.find("[\"c\""));
  const std::string src = (dir.path() / "src").string();
  expect_data_error([&] { import_clinc150(src, out.string()); }, path,
                    {path + ":2:", "byte offset " + offset, "key 'train', record 2", "array of 3 elements"});
  // A number instead of the text.
  body = "{\"train\": [[17, \"x\"]], " + good + "}";
  dir.write("src/data_full.json", body);
  expect_data_error([&] { import_clinc150(src, out.string()); }, path,
                    {"record 1", "text (element 1) should be a string; found a number (17)",
                     "byte offset " + std::to_string(body.find("[17"))});
  // Truncated JSON.
  body = "{\"train\": [[\"a\", \"x\"], [\"b\"";
  dir.write("src/data_full.json", body);
  expect_data_error([&] { import_clinc150(src, out.string()); }, path, {"invalid JSON at byte offset"});
  // A missing key.
  dir.write("src/data_full.json", R"({"train": [], "val": []})");
  expect_data_error([&] { import_clinc150(src, out.string()); }, path, {"missing key 'test'"});
  // Nothing was written.
  EXPECT_FALSE(fs::exists(out / "train.jsonl"));
  // A missing file.
  expect_data_error([&] { import_clinc150(src, out.string(), {"oos_plus", true, "oos"}); },
                    (dir.path() / "src" / "data_oos_plus.json").string(), {"file not found"});
}

// ---------------------------------------------------------------------------------------------
// SNIPS

std::string snips_file(const std::string& intent, const std::vector<std::string>& utterances) {
  std::string s = "{\n  \"" + intent + "\": [";
  for (std::size_t i = 0; i < utterances.size(); ++i) s += (i ? ",\n    " : "\n    ") + utterances[i];
  return s + "\n  ]\n}\n";
}

std::string utterance(const std::string& a, const std::string& b) {
  return R"({"data": [{"text": ")" + a + R"("}, {"text": ")" + b + R"(", "entity": "x"}]})";
}

void write_snips(const TempDir& dir, const std::string& play_music_train) {
  dir.write("snips/train_PlayMusic_full.json", play_music_train);
  dir.write("snips/validate_PlayMusic.json", snips_file("PlayMusic", {utterance("play ", "jazz")}));
  dir.write("snips/train_GetWeather_full.json",
            snips_file("GetWeather", {utterance("  weather in ", "Paris\\n "), utterance("rain in ", "Oslo"),
                                      utterance("snow in ", "Bern"), utterance("sun in ", "Rome")}));
  dir.write("snips/validate_GetWeather.json", snips_file("GetWeather", {utterance("wind in ", "Nice")}));
}

TEST(ImportTest, SnipsJoinsPiecesAndHoldsOutValidation) {
  TempDir dir;
  write_snips(dir, snips_file("PlayMusic", {utterance("play ", "Muse"), utterance("put on ", "some Bach"),
                                            utterance("I want ", "Adele")}));
  const fs::path out = dir.path() / "out";
  SnipsImportOptions options;
  options.val_per_intent = 1;
  const ImportSummary s = import_snips((dir.path() / "snips").string(), out.string(), options);
  EXPECT_EQ(s.splits[0].records, 5u);  // (4 - 1) + (3 - 1)
  EXPECT_EQ(s.splits[1].records, 2u);
  EXPECT_EQ(s.splits[2].records, 2u);
  EXPECT_EQ(kind(s, 1, "PlayMusic"), 1u);
  EXPECT_EQ(s.num_labels, 2u);
  EXPECT_TRUE(s.redecoded.empty());
  const auto test = read_back(out / "test.jsonl", true);
  ASSERT_EQ(test.size(), 2u);
  EXPECT_EQ(test[0].text, "wind in Nice");  // intents sorted: GetWeather first
  EXPECT_EQ(test[0].label, "GetWeather");
  EXPECT_EQ(test[1].text, "play jazz");
  // Outer whitespace stripped, the inner text kept.
  std::vector<std::string> texts;
  for (const auto& r : read_back(out / "train.jsonl", true)) texts.push_back(r.text);
  for (const auto& r : read_back(out / "val.jsonl", true)) texts.push_back(r.text);
  EXPECT_NE(std::find(texts.begin(), texts.end(), "put on some Bach"), texts.end());
  EXPECT_NE(std::find(texts.begin(), texts.end(), "weather in Paris"), texts.end());
  // Deterministic for a seed.
  const std::string first_val = test::read_file((out / "val.jsonl").string());
  import_snips((dir.path() / "snips").string(), out.string(), options);
  EXPECT_EQ(test::read_file((out / "val.jsonl").string()), first_val);
  // Holding out every utterance of an intent is refused.
  options.val_per_intent = 3;
  EXPECT_THROW(import_snips((dir.path() / "snips").string(), out.string(), options), Error);
}

TEST(ImportTest, SnipsLatin1BytesAreDecodedAndReportedOrRejected) {
  TempDir dir;
  const std::string body =
      snips_file("PlayMusic", {utterance("play ", "Caf\xE9 del Mar"), utterance("put on ", "x \xED\xA0\xBC\xED\xBD\x95")});
  write_snips(dir, body);
  const std::string path = (dir.path() / "snips" / "train_PlayMusic_full.json").string();
  const std::string src = (dir.path() / "snips").string();
  const fs::path out = dir.path() / "out";
  SnipsImportOptions options;
  options.val_per_intent = 0;
  ImportSummary s = import_snips(src, out.string(), options);
  ASSERT_EQ(s.redecoded.size(), 1u);
  EXPECT_EQ(s.redecoded[0].file, path);
  EXPECT_EQ(s.redecoded[0].latin1_bytes, 1u);
  EXPECT_EQ(s.redecoded[0].surrogate_pairs, 1u);
  EXPECT_EQ(s.redecoded[0].first_offset, body.find('\xE9'));
  std::vector<std::string> texts;
  for (const auto& r : read_back(out / "train.jsonl", true)) texts.push_back(r.text);
  EXPECT_NE(std::find(texts.begin(), texts.end(), "play Caf\xC3\xA9 del Mar"), texts.end());
  EXPECT_NE(std::find(texts.begin(), texts.end(), "put on x \xF0\x9F\x8D\x95"), texts.end());  // U+1F355
  // Latin-1 for everything: the 6 bytes of the pair become 6 code points.
  options.join_surrogate_pairs = false;
  s = import_snips(src, out.string(), options);
  EXPECT_EQ(s.redecoded[0].latin1_bytes, 7u);
  EXPECT_EQ(s.redecoded[0].surrogate_pairs, 0u);
  // Error mode names the file and the offset, and leaves the manifests alone.
  const std::string before = test::read_file((out / "train.jsonl").string());
  options.invalid_utf8 = SnipsImportOptions::InvalidUtf8::error;
  expect_data_error([&] { import_snips(src, out.string(), options); }, path,
                    {"invalid UTF-8 at byte offset " + std::to_string(body.find('\xE9')), "0xE9"});
  EXPECT_EQ(test::read_file((out / "train.jsonl").string()), before);
}

TEST(ImportTest, SnipsMalformedRecordNamesFileAndOriginalOffset) {
  TempDir dir;
  // A Latin-1 byte before the bad record: the reported offset is the one in the file.
  const std::string bad = R"({"dat": [{"text": "x"}]})";
  const std::string body = snips_file("PlayMusic", {utterance("play ", "Caf\xE9"), bad});
  write_snips(dir, body);
  const std::string path = (dir.path() / "snips" / "train_PlayMusic_full.json").string();
  expect_data_error([&] { import_snips((dir.path() / "snips").string(), (dir.path() / "out").string()); }, path,
                    {"byte offset " + std::to_string(body.find(bad)), "key 'PlayMusic', record 2",
                     "missing \"data\""});
  dir.write("snips/train_PlayMusic_full.json", snips_file("PlayMusic", {R"({"data": [{"entity": "x"}]})"}));
  expect_data_error([&] { import_snips((dir.path() / "snips").string(), (dir.path() / "out").string()); }, path,
                    {"record 1", "piece 1 has no \"text\""});
  dir.write("snips/train_PlayMusic_full.json", snips_file("RateBook", {utterance("a", "b")}));
  expect_data_error([&] { import_snips((dir.path() / "snips").string(), (dir.path() / "out").string()); }, path,
                    {"single key 'PlayMusic'", "'RateBook'"});
  fs::remove(dir.path() / "snips" / "validate_GetWeather.json");
  expect_data_error([&] { import_snips((dir.path() / "snips").string(), (dir.path() / "out").string()); },
                    (dir.path() / "snips" / "validate_GetWeather.json").string(), {"file not found"});
  EXPECT_FALSE(fs::exists(dir.path() / "out" / "train.jsonl"));
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST

/// A gzip file with stored (uncompressed) deflate blocks: no zlib needed to write it.
void write_gzip(const fs::path& path, const std::vector<std::uint8_t>& data) {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    std::uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[n] = c;
  }
  std::uint32_t crc = 0xFFFFFFFFu;
  for (const auto b : data) crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8);
  crc ^= 0xFFFFFFFFu;
  std::vector<std::uint8_t> out = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255};
  std::size_t pos = 0;
  do {
    const std::size_t len = std::min<std::size_t>(65535, data.size() - pos);
    const bool last = pos + len == data.size();
    out.push_back(last ? 1 : 0);
    out.push_back(len & 0xFF);
    out.push_back((len >> 8) & 0xFF);
    out.push_back(~len & 0xFF);
    out.push_back((~len >> 8) & 0xFF);
    out.insert(out.end(), data.begin() + static_cast<std::ptrdiff_t>(pos),
               data.begin() + static_cast<std::ptrdiff_t>(pos + len));
    pos += len;
  } while (pos < data.size());
  for (const std::uint32_t v : {crc, static_cast<std::uint32_t>(data.size())}) {
    for (int k = 0; k < 4; ++k) out.push_back((v >> (8 * k)) & 0xFF);
  }
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(out.data()),
                                               static_cast<std::streamsize>(out.size()));
}

void put_be32(std::vector<std::uint8_t>& v, std::uint32_t x) {
  for (int k = 3; k >= 0; --k) v.push_back((x >> (8 * k)) & 0xFF);
}

/// n images whose pixels are all (offset + i) % 256, labels i % 10.
void write_idx(const fs::path& dir, const std::string& prefix, std::uint32_t n, std::uint32_t offset,
               std::uint32_t image_magic = 0x803) {
  std::vector<std::uint8_t> images, labels;
  put_be32(images, image_magic);
  put_be32(images, n);
  put_be32(images, 28);
  put_be32(images, 28);
  put_be32(labels, 0x801);
  put_be32(labels, n);
  for (std::uint32_t i = 0; i < n; ++i) {
    images.insert(images.end(), 28 * 28, static_cast<std::uint8_t>((offset + i) % 256));
    labels.push_back(static_cast<std::uint8_t>(i % 10));
  }
  write_gzip(dir / (prefix + "-images-idx3-ubyte.gz"), images);
  write_gzip(dir / (prefix + "-labels-idx1-ubyte.gz"), labels);
}

TEST(ImportTest, FashionMnistWritesPngsAndManifests) {
  TempDir dir;
  fs::create_directories(dir.path() / "fm");
  write_idx(dir.path() / "fm", "train", 20, 0);
  write_idx(dir.path() / "fm", "t10k", 5, 100);
  const fs::path out = dir.path() / "out";
  fs::create_directories(out / "images" / "val");
  std::ofstream(out / "images" / "val" / "00099.png") << "stale";
  FashionMnistImportOptions options;
  options.val_size = 4;
  const ImportSummary s = import_fashion_mnist((dir.path() / "fm").string(), out.string(), options);
  EXPECT_EQ(s.splits[0].records, 16u);
  EXPECT_EQ(s.splits[1].records, 4u);
  EXPECT_EQ(s.splits[2].records, 5u);
  EXPECT_EQ(s.num_labels, 10u);
  EXPECT_FALSE(fs::exists(out / "images" / "val" / "00099.png"));
  const auto test = read_back(out / "test.jsonl", false);
  ASSERT_EQ(test.size(), 5u);
  EXPECT_EQ(test[3].image, (out / "images" / "test" / "00003.png").string());
  EXPECT_EQ(test[3].label, "dress");
  EXPECT_EQ(test[3].text, "");
  const cv::Mat png = cv::imread(test[3].image, cv::IMREAD_UNCHANGED);
  ASSERT_EQ(png.rows, 28);
  ASSERT_EQ(png.cols, 28);
  EXPECT_EQ(png.at<std::uint8_t>(27, 27), 103);
  // Train and val partition the 20 training images; each image's label matches its pixels.
  std::vector<int> seen(20, 0);
  for (const char* split : {"train", "val"}) {
    for (const auto& r : read_back(out / (std::string(split) + ".jsonl"), false)) {
      const int value = cv::imread(r.image, cv::IMREAD_UNCHANGED).at<std::uint8_t>(0, 0);
      ASSERT_LT(value, 20);
      ++seen[value];
      EXPECT_EQ(r.label, fashion_mnist_class_names()[value % 10]);
    }
  }
  for (const int n : seen) EXPECT_EQ(n, 1);
  options.val_size = 20;
  EXPECT_THROW(import_fashion_mnist((dir.path() / "fm").string(), out.string(), options), Error);
}

TEST(ImportTest, FashionMnistBadMagicNamesTheFile) {
  TempDir dir;
  fs::create_directories(dir.path() / "fm");
  write_idx(dir.path() / "fm", "train", 20, 0, 0x0801);
  write_idx(dir.path() / "fm", "t10k", 5, 100);
  const std::string path = (dir.path() / "fm" / "train-images-idx3-ubyte.gz").string();
  expect_data_error([&] { import_fashion_mnist((dir.path() / "fm").string(), (dir.path() / "out").string()); },
                    path, {"bad IDX magic number 0x00000801", "expected 0x00000803"});
  fs::remove(dir.path() / "fm" / "t10k-labels-idx1-ubyte.gz");
  write_idx(dir.path() / "fm", "train", 20, 0);
  expect_data_error([&] { import_fashion_mnist((dir.path() / "fm").string(), (dir.path() / "out").string()); },
                    (dir.path() / "fm" / "t10k-labels-idx1-ubyte.gz").string(), {"file not found"});
  EXPECT_FALSE(fs::exists(dir.path() / "out"));
}

}  // namespace
}  // namespace mmintent
