// The bad input catalogue: every kind of bad config, manifest, text, image, label, split,
// tokenizer and checkpoint, as the user of the `mmintent` CLI (MMINTENT_CLI) meets it: the exit
// code (3 config, 4 data, 5 checkpoint) and one "mmintent: error:" line naming the file and the
// line (or the key). With data.on_bad_sample / data.unknown_labels: skip, every skipped sample
// is reported by file and line, in the log and in the run directory (skipped_<split>.txt).
// The fixture is tiny (8 / 4 / 4 samples of 8x8 images, a model of a few hundred weights,
// 1 epoch), so that each CLI run takes about a second.

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "mmintent/data/dataset.h"
#include "mmintent/data/tokenizer.h"
#include "support/cli.h"
#include "support/support.h"

#ifndef MMINTENT_CLI
#error "MMINTENT_CLI must name the built mmintent executable"
#endif

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

const std::vector<std::string> kRefund = {"please refund this", "i want my money back",
                                          "can i return it"};
const std::vector<std::string> kStock = {"is it in stock", "do you have more", "can i buy one"};

/// An 8x8 grey image: bright left half for label "refund", bright right half for "stock".
cv::Mat label_image(bool refund, int seed) {
  cv::Mat m(8, 8, CV_8UC1);
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 8; ++x) {
      const bool bright = (x < 4) == refund;
      m.at<uint8_t>(y, x) = static_cast<uint8_t>(bright ? 200 + (seed * 7 + x + y) % 50 : 20);
    }
  }
  return m;
}

std::string record(const std::string& text, const std::string& image, const std::string& label) {
  return json{{"text", text}, {"image", image}, {"label", label}}.dump();
}

std::string config_text() {
  return test::fixture_text("configs/bad_input.yaml");
}

/// A CLI run and how long it took (wall clock).
struct CliResult : test::CliResult {
  double seconds = 0;
};

/// CRC-32 (the PNG/zlib polynomial), for hand-made PNG chunks.
uint32_t crc32(const std::string& bytes) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

/// A PNG signature and IHDR chunk (valid CRC) claiming width x height grey pixels, then a
/// few bytes of data that are not a real image.
std::string png_header_claiming(uint32_t width, uint32_t height) {
  const std::string ihdr = "IHDR" + be32(width) + be32(height) + std::string("\x08\x00\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + ihdr + be32(crc32(ihdr)) +
         be32(4) + "IDAT" + "\x78\x9c\x03\x00" + be32(crc32("IDAT\x78\x9c\x03\x00"));
}

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path();
    fs::create_directories(root_ / "data" / "img");
    write_split("train", 8);
    write_split("val", 4);
    write_split("test", 4);
    config_ = dir_.write("config.yaml", config_text());
    run_dir_ = root_ / "runs" / "r";
  }

  /// data/<split>.jsonl with n samples alternating refund/stock, images data/img/<split>_i.png.
  void write_split(const std::string& split, int n) {
    std::vector<std::string> lines;
    for (int i = 0; i < n; ++i) {
      const bool refund = i % 2 == 0;
      const std::string image = "img/" + split + "_" + std::to_string(i) + ".png";
      EXPECT_TRUE(cv::imwrite((root_ / "data" / image).string(), label_image(refund, i)));
      const auto& texts = refund ? kRefund : kStock;
      lines.push_back(record(texts[i % texts.size()], image, refund ? "refund" : "stock"));
    }
    write_lines("data/" + split + ".jsonl", lines);
  }

  std::string write_lines(const std::string& name, const std::vector<std::string>& lines) const {
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    return dir_.write(name, text);
  }

  /// Replaces line `line` (1-based) of data/<split>.jsonl.
  void set_line(const std::string& split, int line, const std::string& content) const {
    const auto path = root_ / "data" / (split + ".jsonl");
    std::istringstream in(test::read_file(path.string()));
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    ASSERT_LE(line, static_cast<int>(lines.size()));
    lines[static_cast<size_t>(line - 1)] = content;
    write_lines("data/" + split + ".jsonl", lines);
  }

  /// Runs `mmintent ARGS` with the temp dir as working directory; logs go to cli_logs/.
  CliResult cli(const std::vector<std::string>& args) const {
    const auto t0 = std::chrono::steady_clock::now();
    CliResult r;
    static_cast<test::CliResult&>(r) = test::run_cli(MMINTENT_CLI, args, root_, {}, root_ / "cli_logs");
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  /// `train config.yaml ARGS...`
  CliResult train(std::vector<std::string> args = {}) {
    args.insert(args.begin(), {"train", config_});
    return cli(args);
  }

  /// Checks a failing run: the exit code, one "mmintent: error:" line containing `parts`,
  /// and (when `run_dir_untouched`) that nothing was written to the run directory.
  void expect_failure(const CliResult& r, int code, const std::vector<std::string>& parts,
                      bool run_dir_untouched = true) const {
    EXPECT_EQ(r.code, code) << r.dump();
    const auto line = r.error_line();
    ASSERT_FALSE(line.empty()) << "no 'mmintent: error:' line\n" << r.dump();
    for (const auto& p : parts) EXPECT_NE(line.find(p), std::string::npos) << "'" << p << "' not in: " << line;
    if (run_dir_untouched) {
      EXPECT_FALSE(fs::exists(run_dir_)) << "bad input must not create the run directory";
    }
  }

  /// Line 3 of the training manifest points to data/img/<name> holding `bytes`; training
  /// must fail with exit 4 naming train.jsonl:3, the image and `parts`.
  CliResult expect_bad_image(const std::string& name, const std::string& bytes,
                             const std::vector<std::string>& parts,
                             const std::vector<std::string>& args = {}) {
    dir_.write("data/img/" + name, bytes);
    set_line("train", 3, record(kRefund[0], "img/" + name, "refund"));
    auto r = train(args);
    auto all = parts;
    all.push_back("train.jsonl:3");
    all.push_back("img/" + name);
    expect_failure(r, 4, all);
    return r;
  }

  /// (path -> size and last write time) of every file under `dir`.
  static std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> snapshot(const fs::path& dir) {
    std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (e.is_regular_file()) out[e.path().string()] = {e.file_size(), e.last_write_time()};
    }
    return out;
  }

  std::string png_bytes() const {
    std::vector<uchar> buf;
    EXPECT_TRUE(cv::imencode(".png", label_image(true, 1), buf));
    return {buf.begin(), buf.end()};
  }

  TempDir dir_;
  fs::path root_, run_dir_;
  std::string config_;
};

// ---- Config. ----

/// ":N" where N is the 1-based line of `needle` in the fixture's config.
std::string config_line(const std::string& needle) {
  const auto text = config_text();
  const auto at = text.find(needle);
  EXPECT_NE(at, std::string::npos) << needle;
  return ":" + std::to_string(1 + std::count(text.begin(), text.begin() + static_cast<long>(at), '\n'));
}

TEST_F(BadInputTest, ConfigFaultsNameFileLineAndKey) {
  auto with = [&](const std::string& from, const std::string& to) {
    auto text = config_text();
    const auto at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    return dir_.write("bad.yaml", text);
  };
  // Malformed YAML (an unclosed flow sequence): file and line.
  expect_failure(cli({"train", with("channels: [4]", "channels: [4")}), 3, {"bad.yaml:", "YAML"});
  // Unknown key, with a suggestion.
  expect_failure(cli({"train", with("  epochs: 1", "  epoch: 1")}), 3,
                 {"bad.yaml" + config_line("epochs: 1"), "train.epoch", "unknown key"});
  // Wrong type.
  expect_failure(cli({"train", with("  epochs: 1", "  epochs: one")}), 3,
                 {"bad.yaml" + config_line("epochs: 1"), "train.epochs", "integer"});
  // Out of range.
  expect_failure(cli({"train", with("max_length: 16", "max_length: 0")}), 3,
                 {"bad.yaml" + config_line("max_length"), "data.text.max_length"});
  // A manifest that does not exist: the key and the path.
  expect_failure(cli({"train", with("val: data/val.jsonl", "val: data/nope.jsonl")}), 3,
                 {"bad.yaml" + config_line("val:"), "data.val", "nope.jsonl"});
  // Also as an override (no line: the override is named).
  expect_failure(train({"data.test=data/absent.jsonl"}), 3, {"data.test", "absent.jsonl"});
  // The config file itself missing: a config error, from train and config alike.
  expect_failure(cli({"train", "nope.yaml"}), 3, {"nope.yaml", "the config file does not exist"});
  expect_failure(cli({"config", "nope.yaml"}), 3, {"nope.yaml", "the config file does not exist"});
}

// ---- Manifest lines. ----

TEST_F(BadInputTest, ManifestLineThatIsNotJson) {
  set_line("train", 3, R"({"text": "refund please", "image": )");
  expect_failure(train(), 4, {"data/train.jsonl:3", "not valid JSON"});
  set_line("train", 3, R"(["refund please", "img/train_0.png", "refund"])");
  expect_failure(train(), 4, {"data/train.jsonl:3", "expected a JSON object, found array"});
}

TEST_F(BadInputTest, CsvRowWithTheWrongNumberOfFields) {
  dir_.write("data/train.csv",
             "text,image,label\n"
             "please refund this,img/train_0.png,refund\n"
             "is it in stock,img/train_1.png\n"
             "can i buy one,img/train_3.png,stock\n");
  expect_failure(train({"data.train=data/train.csv"}), 4,
                 {"data/train.csv:3", "expected 3 fields, found 2"});
  dir_.write("data/train.csv",
             "text,image,label\n"
             "please refund this,img/train_0.png,refund\n"
             "is it in stock,img/train_1.png,stock\n"
             "can i buy one, really,img/train_3.png,stock\n");
  expect_failure(train({"data.train=data/train.csv"}), 4,
                 {"data/train.csv:4", "expected 3 fields, found 4"});
}

TEST_F(BadInputTest, ManifestLineLackingTheTextImageOrLabelField) {
  set_line("train", 2, json{{"image", "img/train_1.png"}, {"label", "stock"}}.dump());
  expect_failure(train(), 4, {"data/train.jsonl:2", "missing field 'text'"});
  set_line("train", 2, json{{"text", "is it in stock"}, {"label", "stock"}}.dump());
  expect_failure(train(), 4, {"data/train.jsonl:2", "missing field 'image'"});
  set_line("train", 2, json{{"text", "is it in stock"}, {"image", "img/train_1.png"}}.dump());
  expect_failure(train(), 4, {"data/train.jsonl:2", "missing field 'label'"});
  // A field of the wrong JSON type.
  set_line("train", 2, json{{"text", 42}, {"image", "img/train_1.png"}, {"label", "stock"}}.dump());
  expect_failure(train(), 4, {"data/train.jsonl:2", "field 'text' must be a string, found number"});
  // Renamed fields (data.fields.*) are what is looked for.
  expect_failure(train({"data.fields.text=message"}), 4, {"data/train.jsonl:1", "missing field 'message'"});
}

TEST_F(BadInputTest, TextThatIsNotUtf8) {
  // Latin-1 "caf\xe9" as raw bytes in the JSON line.
  set_line("train", 4, "{\"text\": \"caf\xe9 in stock?\", \"image\": \"img/train_3.png\", \"label\": \"stock\"}");
  expect_failure(train(), 4, {"data/train.jsonl:4", "not valid UTF-8", "byte offset 3"});
  // The same in a CSV manifest.
  dir_.write("data/train.csv", "text,image,label\nplease refund this,img/train_0.png,refund\n"
                               "caf\xe9 in stock?,img/train_1.png,stock\n");
  expect_failure(train({"data.train=data/train.csv"}), 4, {"data/train.csv:3", "not valid UTF-8"});
}

TEST_F(BadInputTest, EmptyTextIsAnErrorUnlessAllowed) {
  set_line("train", 5, record("", "img/train_4.png", "refund"));
  expect_failure(train(), 4, {"data/train.jsonl:5", "empty text"});
  set_line("train", 5, record("   ", "img/train_4.png", "refund"));
  expect_failure(train(), 4, {"data/train.jsonl:5", "empty text"});
  const auto ok = train({"data.allow_missing_text=true"});
  EXPECT_EQ(ok.code, 0) << ok.dump();
}

TEST_F(BadInputTest, VeryLongTextIsTruncatedQuickly) {
  // 100,000 characters in one training text and one test text.
  std::string long_text;
  while (long_text.size() < 100000) long_text += "please refund this now ";
  long_text.resize(100000);
  set_line("train", 1, record(long_text, "img/train_0.png", "refund"));
  set_line("test", 1, record(long_text, "img/test_0.png", "refund"));
  const auto r = train();
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_LT(r.seconds, 60) << "a long text must not be slow";
  const auto p = cli({"predict", run_dir_.string(), "--text", long_text, "--image",
                      (root_ / "data" / "img" / "test_0.png").string()});
  ASSERT_EQ(p.code, 0) << p.dump();
  EXPECT_NE(p.out.find("refund"), std::string::npos) << p.dump();
  rusage usage{};
  ASSERT_EQ(getrusage(RUSAGE_CHILDREN, &usage), 0);
  EXPECT_LT(usage.ru_maxrss, 2L * 1024 * 1024) << "peak RSS of a CLI run (KiB)";  // < 2 GiB

  // What the model sees: max_length tokens, whatever the text's length.
  const auto tokenizer = std::make_shared<Tokenizer>(Tokenizer::load((run_dir_ / "tokenizer.model").string()));
  Manifest m;
  m.path = "long.jsonl";
  Record long_record;
  long_record.text = long_text;
  long_record.label = "refund";
  long_record.line = 1;
  m.records.push_back(long_record);
  DatasetOptions o;
  o.modalities = {"text"};
  o.max_length = 16;
  const auto t0 = std::chrono::steady_clock::now();
  const MultimodalDataset d(std::move(m), nullptr, tokenizer, o);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  EXPECT_EQ(d.token_ids(0).size(), 16u);
}

// ---- Images. ----

TEST_F(BadInputTest, ImageThatIsMissing) {
  set_line("train", 3, record(kRefund[0], "img/nowhere.png", "refund"));
  expect_failure(train(), 4, {"data/train.jsonl:3", "img/nowhere.png", "image file not found"});
  // Without the image cache too: found before training, nothing written.
  expect_failure(train({"data.cache_images=false"}), 4,
                 {"data/train.jsonl:3", "img/nowhere.png", "image file not found"});
}

TEST_F(BadInputTest, ImageThatCannotBeRead) {
  // A folder where the image should be: unreadable whoever runs the tests.
  fs::create_directories(root_ / "data" / "img" / "folder.png");
  set_line("train", 3, record(kRefund[0], "img/folder.png", "refund"));
  expect_failure(train(), 4, {"data/train.jsonl:3", "img/folder.png", "image path is a directory"});
  // A file without read permission.
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: a chmod 000 file is still readable";
  const auto path = dir_.write("data/img/locked.png", png_bytes());
  fs::permissions(path, fs::perms::none);
  set_line("train", 3, record(kRefund[0], "img/locked.png", "refund"));
  expect_failure(train(), 4, {"data/train.jsonl:3", "img/locked.png", "Permission denied"});
  fs::permissions(path, fs::perms::owner_all);
}

TEST_F(BadInputTest, ImageWithZeroBytes) {
  expect_bad_image("empty.png", "", {"image file is empty (0 bytes)"});
}

TEST_F(BadInputTest, TruncatedPngAndJpeg) {
  const auto png = png_bytes();
  expect_bad_image("half.png", png.substr(0, png.size() / 2), {"cannot decode image"});
  std::vector<uchar> buf;
  ASSERT_TRUE(cv::imencode(".jpg", label_image(true, 2), buf));
  const std::string jpg(buf.begin(), buf.end());
  expect_bad_image("half.jpg", jpg.substr(0, jpg.size() / 2), {"truncated JPEG"});
}

TEST_F(BadInputTest, TextFileNamedPng) {
  expect_bad_image("notes.png", "these are my shopping notes, not a picture\n", {"cannot decode image"});
}

TEST_F(BadInputTest, HugeDimensionsAreRefusedFromTheHeader) {
  // A PNG header claiming 100000 x 100000 pixels: refused before decoding, at once.
  auto r = expect_bad_image("huge.png", png_header_claiming(100000, 100000),
                            {"100000x100000", "above max_pixels = 40000000"});
  EXPECT_LT(r.seconds, 20);
  // A JPEG frame header claiming 60000 x 60000, a PGM and a TIFF header claiming 50000 x 50000.
  const std::string sof = std::string("\xFF\xD8\xFF\xC0\x00\x0B\x08\xEA\x60\xEA\x60\x01\x01\x11\x00", 15);
  expect_bad_image("huge.jpg", sof + "\xFF\xD9", {"60000x60000", "max_pixels"});
  expect_bad_image("huge.pgm", "P5\n# big\n50000 50000\n255\n" + std::string(64, '\0'), {"50000x50000", "max_pixels"});
  const std::string tiff = std::string("II*\0\x08\0\0\0\x02\0", 10) +
                           std::string("\x00\x01\x04\x00\x01\x00\x00\x00\x50\xC3\x00\x00", 12) +
                           std::string("\x01\x01\x04\x00\x01\x00\x00\x00\x50\xC3\x00\x00", 12) +
                           std::string(4, '\0');
  expect_bad_image("huge.tif", tiff, {"50000x50000", "max_pixels"});
  // With max_pixels raised past what OpenCV decodes (2^30 pixels), OpenCV's limit is named.
  expect_bad_image("huge.png", png_header_claiming(100000, 100000), {"more than the decoder (OpenCV) accepts"},
                   {"data.image.max_pixels=100000000000"});
}

TEST_F(BadInputTest, PredictNamesABadImage) {
  ASSERT_EQ(train().code, 0);
  const auto r = cli({"predict", run_dir_.string(), "--text", "refund", "--image", "missing.png"});
  expect_failure(r, 4, {"missing.png", "image file not found"}, /*run_dir_untouched=*/false);
  dir_.write("notes.png", "not a picture");
  const auto n = cli({"predict", run_dir_.string(), "--text", "refund", "--image", "notes.png"});
  expect_failure(n, 4, {"notes.png", "cannot decode image"}, false);
}

// ---- Skipping bad samples. ----

TEST_F(BadInputTest, SkippedSamplesAreCountedAndListedByFileAndLine) {
  for (const bool cache : {true, false}) {
    SCOPED_TRACE(cache ? "cache_images: true" : "cache_images: false");
    set_line("train", 2, R"({"text": "broken)");                             // not JSON
    set_line("train", 4, record(kStock[0], "img/nowhere.png", "stock"));    // no image
    dir_.write("data/img/notes.png", "not a picture");
    set_line("train", 6, record(kStock[1], "img/notes.png", "stock"));      // not an image
    set_line("val", 3, record(kRefund[1], "img/val_2.png", "mystery"));     // unknown label
    const auto run = (root_ / "runs" / (cache ? "cache" : "nocache")).string();
    const auto r = train({"data.on_bad_sample=skip", "data.unknown_labels=skip",
                          std::string("data.cache_images=") + (cache ? "true" : "false"), "output.dir=" + run});
    ASSERT_EQ(r.code, 0) << r.dump();
    // The end of the log: the count, then every sample by file and line.
    const auto summary = r.err.rfind("skipped 4 sample(s) in all: train 3 (skipped_train.txt), val 1 (skipped_val.txt)");
    ASSERT_NE(summary, std::string::npos) << r.dump();
    for (const std::string where : {"train.jsonl:2: not valid JSON", "train.jsonl:4: ", "train.jsonl:6: ",
                                    "val.jsonl:3: label 'mystery'"}) {
      EXPECT_NE(r.err.find(where, summary), std::string::npos) << where << "\n" << r.dump();
    }
    // The run directory: one file per split, one "file:line: reason" line per skipped sample,
    // and the same in train.log.
    const auto train_skips = test::read_file(run + "/skipped_train.txt");
    EXPECT_EQ(std::count(train_skips.begin(), train_skips.end(), '\n'), 3) << train_skips;
    EXPECT_NE(train_skips.find("data/train.jsonl:4: "), std::string::npos) << train_skips;
    EXPECT_NE(train_skips.find("img/nowhere.png: image file not found"), std::string::npos) << train_skips;
    EXPECT_NE(train_skips.find("data/train.jsonl:6: "), std::string::npos) << train_skips;
    EXPECT_NE(train_skips.find("img/notes.png: cannot decode image"), std::string::npos) << train_skips;
    const auto val_skips = test::read_file(run + "/skipped_val.txt");
    EXPECT_NE(val_skips.find("data/val.jsonl:3: label 'mystery' is not in the label map"), std::string::npos);
    EXPECT_FALSE(fs::exists(run + "/skipped_test.txt"));
    const auto log = test::read_file(run + "/train.log");
    EXPECT_NE(log.find("skipped 4 sample(s) in all"), std::string::npos) << log;
    EXPECT_NE(log.find("train.jsonl:6"), std::string::npos) << log;
    // 5 of 8 training samples are left.
    EXPECT_NE(r.err.find("train 5, val 3, test 4 samples"), std::string::npos) << r.dump();
  }
}

TEST_F(BadInputTest, EvalListsSkippedSamplesInTheRunDirectory) {
  ASSERT_EQ(train().code, 0);
  set_line("test", 2, record(kStock[0], "img/nowhere.png", "stock"));
  // The run's config says error: the eval fails naming the line.
  expect_failure(cli({"eval", run_dir_.string(), "--split", "test"}), 4,
                 {"data/test.jsonl:2", "image file not found"}, false);
  // A run trained with skip skips and lists it.
  const auto run = (root_ / "runs" / "skip").string();
  ASSERT_EQ(train({"data.on_bad_sample=skip", "output.dir=" + run}).code, 0);
  const auto e = cli({"eval", run, "--split", "test"});
  ASSERT_EQ(e.code, 0) << e.dump();
  EXPECT_NE(e.err.find("data/test.jsonl:2"), std::string::npos) << e.dump();
  EXPECT_NE(test::read_file(run + "/skipped_test.txt").find("data/test.jsonl:2"), std::string::npos);
}

TEST_F(BadInputTest, PredictManifestMarksEverySkippedRecord) {
  const auto manifest = (root_ / "data" / "test.jsonl").string();
  const auto out = (root_ / "predictions.jsonl").string();
  const auto run = (root_ / "runs" / "skip").string();
  ASSERT_EQ(train().code, 0);
  ASSERT_EQ(train({"data.on_bad_sample=skip", "output.dir=" + run}).code, 0);
  // The test split with a line that is not JSON and a record whose image is not one.
  set_line("test", 2, R"({"text": "broken)");
  dir_.write("data/img/notes.png", "not a picture");
  set_line("test", 3, record(kStock[0], "img/notes.png", "stock"));

  // A run trained with on_bad_sample: error refuses the manifest, naming the first bad line.
  expect_failure(cli({"predict", run_dir_.string(), "--manifest", manifest, "--out", out}), 4,
                 {"data/test.jsonl:2", "not valid JSON"}, false);
  EXPECT_FALSE(fs::exists(out));
  // A run trained with skip predicts the rest and puts a "skipped" line in place of each bad
  // record, so the output still has one line per record, in order.
  for (const bool rewrite : {false, true}) {
    SCOPED_TRACE(rewrite ? "--rewrite" : "plain");
    std::vector<std::string> args = {"predict", run, "--manifest", manifest, "--out", out};
    if (rewrite) args.push_back("--rewrite");
    const auto r = cli(args);
    ASSERT_EQ(r.code, 0) << r.dump();
    EXPECT_NE(r.out.find("wrote 2 "), std::string::npos) << r.dump();
    EXPECT_NE(r.out.find("2 record(s) skipped"), std::string::npos) << r.dump();
    EXPECT_NE(r.err.find("data/test.jsonl:2: not valid JSON"), std::string::npos) << r.dump();
    EXPECT_NE(r.err.find("data/test.jsonl:3: "), std::string::npos) << r.dump();
    std::istringstream in(test::read_file(out));
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    ASSERT_EQ(lines.size(), 4u);
    for (size_t i = 0; i < lines.size(); ++i) {
      const auto j = json::parse(lines[i]);
      EXPECT_EQ(j["line"].get<int64_t>(), static_cast<int64_t>(i) + 1) << lines[i];
      const bool bad = i == 1 || i == 2;
      EXPECT_EQ(j.contains("skipped"), bad) << lines[i];
      if (bad) {
        EXPECT_EQ(j.size(), 2u) << lines[i];
      }
    }
    EXPECT_NE(lines[1].find("not valid JSON"), std::string::npos) << lines[1];
    EXPECT_NE(lines[2].find("cannot decode image"), std::string::npos) << lines[2];
  }
}

// ---- Labels. ----

TEST_F(BadInputTest, UnknownLabelInTheTestSplit) {
  set_line("test", 2, record(kStock[0], "img/test_1.png", "exchange"));
  expect_failure(train(), 4,
                 {"data/test.jsonl:2", "label 'exchange' is not in the label map", "data.unknown_labels: skip"});
  const auto r = train({"data.unknown_labels=skip"});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(test::read_file((run_dir_ / "skipped_test.txt").string()).find("data/test.jsonl:2: label 'exchange'"),
            std::string::npos);
  EXPECT_EQ(json::parse(std::ifstream(run_dir_ / "report.json"))["test"]["count"].get<int>(), 3);
}

// ---- Empty splits. ----

TEST_F(BadInputTest, EmptySplits) {
  write_lines("data/train.jsonl", {});
  expect_failure(train(), 4, {"data/train.jsonl", "the training split is empty"});
  write_lines("data/train.jsonl", {"", "   ", ""});  // blank lines only
  expect_failure(train(), 4, {"data/train.jsonl", "the training split is empty"});
  write_split("train", 8);
  write_lines("data/val.jsonl", {});
  expect_failure(train(), 4, {"data/val.jsonl", "the validation split is empty"});
  write_split("val", 4);
  write_lines("data/test.jsonl", {});
  expect_failure(train(), 4, {"data/test.jsonl", "the test split is empty"});
  write_split("test", 4);
  // Every training sample skipped.
  for (int i = 1; i <= 8; ++i) set_line("train", i, record("", "img/train_0.png", "refund"));
  expect_failure(train({"data.on_bad_sample=skip"}), 4, {"data/train.jsonl", "the training split is empty"});
}

// ---- Tokenizer. ----

TEST_F(BadInputTest, CorruptTokenizerModel) {
  dir_.write("bad.model", "this is not a sentencepiece model\n");
  expect_failure(train({"data.text.tokenizer=bad.model"}), 4, {"bad.model", "not a valid sentencepiece model"});
  // A run directory whose tokenizer.model is corrupt: eval and predict name it.
  ASSERT_EQ(train().code, 0);
  dir_.write("runs/r/tokenizer.model", "garbage");
  expect_failure(cli({"eval", run_dir_.string()}), 4, {"runs/r/tokenizer.model", "not a valid sentencepiece model"},
                 false);
  expect_failure(cli({"predict", run_dir_.string(), "--text", "refund", "--image", "data/img/test_0.png"}), 4,
                 {"runs/r/tokenizer.model", "not a valid sentencepiece model"}, false);
}

// ---- Checkpoints. ----

TEST_F(BadInputTest, TruncatedCheckpointForEvalPredictAndResume) {
  ASSERT_EQ(train().code, 0);
  const auto model = (run_dir_ / "model.pt").string();
  const auto bytes = test::read_file(model);
  dir_.write("runs/r/model.pt", bytes.substr(0, bytes.size() / 2));
  expect_failure(cli({"eval", run_dir_.string()}), 5, {"runs/r/model.pt", "truncated or corrupt"}, false);
  expect_failure(cli({"predict", run_dir_.string(), "--text", "refund", "--image", "data/img/test_0.png"}), 5,
                 {"runs/r/model.pt", "truncated or corrupt"}, false);
  dir_.write("runs/r/model.pt", "");
  expect_failure(cli({"eval", run_dir_.string()}), 5, {"runs/r/model.pt"}, false);
  const auto last = test::read_file((run_dir_ / "last.pt").string());
  dir_.write("runs/r/last.pt", last.substr(0, last.size() / 3));
  const auto before = snapshot(run_dir_);
  expect_failure(train({"train.epochs=2", "--resume", "auto"}), 5, {"runs/r/last.pt", "truncated or corrupt"},
                 false);
  EXPECT_EQ(snapshot(run_dir_), before) << "a refused --resume must not touch the run directory";
}

TEST_F(BadInputTest, CheckpointFromAnotherArchitecture) {
  ASSERT_EQ(train().code, 0);
  // The run's config now describes a wider text encoder than model.pt holds.
  const auto cfg = (run_dir_ / "config.yaml").string();
  const std::string saved = test::read_file(cfg);
  std::string wider = saved;
  const auto at = wider.find("hidden_size: 4");
  ASSERT_NE(at, std::string::npos) << saved;
  wider.replace(at, 14, "hidden_size: 6");
  dir_.write("runs/r/config.yaml", wider);
  expect_failure(cli({"eval", run_dir_.string()}), 5, {"runs/r/model.pt", "has shape", "architecture"}, false);
  expect_failure(cli({"predict", run_dir_.string(), "--text", "refund", "--image", "data/img/test_0.png"}), 5,
                 {"runs/r/model.pt", "has shape", "architecture"}, false);
  dir_.write("runs/r/config.yaml", saved);
  // Resuming with another architecture: a changed width, and an added layer (missing tensors).
  // A refused resume leaves the run directory as it was (its config.yaml still fits model.pt).
  const auto before = snapshot(run_dir_);
  expect_failure(train({"train.epochs=2", "model.text_encoder.hidden_size=6", "--resume", "auto"}), 5,
                 {"runs/r/last.pt", "has shape", "architecture"}, false);
  expect_failure(train({"train.epochs=2", "model.text_encoder.num_layers=2", "--resume", "auto"}), 5,
                 {"runs/r/last.pt", "has no tensor", "architecture"}, false);
  // Resuming with another optimizer: its state cannot be loaded.
  expect_failure(train({"train.epochs=2", "train.optimizer.type=sgd", "--resume", "auto"}), 5,
                 {"runs/r/last.pt", "adamw optimizer, but this run uses sgd", "train.optimizer.type"}, false);
  // A folder given as the checkpoint.
  expect_failure(train({"train.epochs=2", "--resume", "runs"}), 5, {"'runs' is a directory"}, false);
  EXPECT_EQ(snapshot(run_dir_), before) << "a refused --resume must not touch the run directory";
  const auto e = cli({"eval", run_dir_.string()});
  EXPECT_EQ(e.code, 0) << e.dump();
}

}  // namespace
}  // namespace mmintent
