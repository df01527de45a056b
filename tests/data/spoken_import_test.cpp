// Spoken data sets (import_spoken, import_spoken_snips share the synthesis): espeak-ng speaks
// every text into a 16 kHz WAV the audio reader accepts, voice variants never cross splits, the
// rendition fields and the other fields are kept (image paths still valid), the data set's
// README says the speech is synthetic, the output is the same for the same seed, and a record
// without a text is refused naming its line.
#include "mmintent/data/audio.h"
#include "mmintent/data/importers.h"
#include "mmintent/error.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<json> lines_of(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

class SpokenImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<std::pair<std::string, std::string>> texts{
        {"can i send these shoes back", "return"}, {"do you have this bag in blue", "stock"},
        {"how do i wash this shirt", "care"},      {"i want to return my coat", "return"}};
    for (const char* split : {"train", "val", "test"}) {
      std::string manifest;
      for (size_t i = 0; i < texts.size(); ++i) {
        manifest += json{{"text", texts[i].first}, {"image", "img/" + std::to_string(i) + ".png"},
                         {"label", texts[i].second}, {"shop", "north"}}.dump() + "\n";
      }
      dir_.write(std::string("src/") + split + ".jsonl", manifest);
    }
  }
  test::TempDir dir_;
};

TEST_F(SpokenImportTest, SpeaksEveryTextSplitByVoice) {
  SpeechOptions o;
  o.seed = 3;
  const auto out = dir_.path() / "out";
  const auto summary = import_spoken((dir_.path() / "src").string(), out.string(), o);
  ASSERT_EQ(summary.splits.size(), 3u);
  std::map<std::string, std::set<std::string>> variants;  // by split
  AudioOptions audio;
  for (const char* split : {"train", "val", "test"}) {
    const auto records = lines_of(out / (std::string(split) + ".jsonl"));
    ASSERT_EQ(records.size(), 4u) << split;
    for (const auto& r : records) {
      EXPECT_FALSE(r["text"].get<std::string>().empty());
      EXPECT_EQ(r["shop"], "north");  // other fields kept
      // The image path still points where it did, now from OUT's folder.
      EXPECT_EQ((out / r["image"].get<std::string>()).lexically_normal(),
                (dir_.path() / "src" / "img").lexically_normal() / fs::path(r["image"].get<std::string>()).filename());
      const std::string voice = r["voice"];
      variants[split].insert(voice.substr(voice.find('+') + 1));
      EXPECT_GE(r["rate"].get<int>(), o.rate_min);
      EXPECT_LE(r["pitch"].get<int>(), o.pitch_max);
      const std::string snr = r["snr"];
      EXPECT_TRUE(snr == "clean" || snr == "20 dB" || snr == "10 dB" || snr == "5 dB") << snr;
      // A real clip: decoded by the reader, of the length the record says, not silence.
      const auto clip = decode_audio_file((out / r["audio"].get<std::string>()).string(), audio);
      EXPECT_NEAR(clip.seconds(), r["seconds"].get<double>(), 0.01);
      EXPECT_GT(clip.seconds(), 0.5);
      float peak = 0;
      for (float v : clip.samples) peak = std::max(peak, std::abs(v));
      EXPECT_GT(peak, 0.2f);
    }
  }
  for (const auto& v : variants["test"]) {
    EXPECT_EQ(variants["train"].count(v), 0u) << "test voice " << v << " speaks in train";
    EXPECT_EQ(variants["val"].count(v), 0u) << "test voice " << v << " speaks in val";
  }
  for (const auto& v : variants["val"]) EXPECT_EQ(variants["train"].count(v), 0u) << v;
  const std::string readme = test::read_file((out / "README.md").string());
  EXPECT_NE(readme.find("**The speech is synthetic.**"), std::string::npos);

  // The same seed: the same voices, rates, pitches, noise and split. (Not the same samples:
  // espeak-ng carries state from one utterance to the next, and its output for a text varies by
  // a few milliseconds with what it spoke before.)
  import_spoken((dir_.path() / "src").string(), (dir_.path() / "again").string(), o);
  for (const char* split : {"train", "val", "test"}) {
    auto first = lines_of(out / (std::string(split) + ".jsonl"));
    auto again = lines_of(dir_.path() / "again" / (std::string(split) + ".jsonl"));
    ASSERT_EQ(first.size(), again.size());
    for (size_t i = 0; i < first.size(); ++i) {
      EXPECT_NEAR(first[i]["seconds"].get<double>(), again[i]["seconds"].get<double>(), 0.05);
      first[i].erase("seconds");
      again[i].erase("seconds");
      EXPECT_EQ(first[i], again[i]) << split << " " << i;
    }
  }
}

TEST_F(SpokenImportTest, ARecordWithoutTextIsRefusedNamingItsLine) {
  dir_.write("src/val.jsonl", "{\"text\": \"hello\", \"label\": \"care\"}\n{\"label\": \"care\"}\n");
  try {
    import_spoken((dir_.path() / "src").string(), (dir_.path() / "out").string(), SpeechOptions{});
    ADD_FAILURE() << "no error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("val.jsonl:2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no \"text\""), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_.path() / "out" / "val.jsonl"));
  SpeechOptions bad;
  bad.accents = {"xx-nowhere"};
  dir_.write("src/val.jsonl", "{\"text\": \"hello\", \"label\": \"care\"}\n");
  EXPECT_THROW(import_spoken((dir_.path() / "src").string(), (dir_.path() / "out").string(), bad), Error);
}

}  // namespace
}  // namespace mmintent
