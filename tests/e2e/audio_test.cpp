// The audio modality end to end through the `mmintent` CLI: a tiny generated set of tones (one
// pitch band per intent, random length, loudness, pitch within the band and noise; 8 kHz mono
// and stereo files, resampled to 16 kHz) trains audio-only to a high test accuracy; predict
// --audio and --manifest answer for audio; a corrupt audio file is exit 4 naming it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "support/audio.h"
#include "support/cli.h"
#include "support/support.h"

#ifndef MMINTENT_CLI
#error "MMINTENT_CLI must name the built mmintent executable"
#endif

namespace mmintent {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kIntents{"low", "mid", "high"};
const std::vector<double> kBandHz{300, 900, 2400};

/// A tone of intent k: its band's pitch +-15%, 0.3-0.9 s, amplitude 0.2-0.8, white noise.
std::vector<float> tone(int k, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  const double hz = kBandHz[k] * (0.85 + 0.3 * u(rng));
  const auto n = static_cast<int64_t>(8000 * (0.3 + 0.6 * u(rng)));
  auto x = test::sine(hz, 8000, n, 0.2 + 0.6 * u(rng));
  std::normal_distribution<float> noise(0.f, 0.02f);
  for (auto& v : x) v += noise(rng);
  return x;
}

std::string write_split(const fs::path& root, const std::string& split, int n, unsigned seed) {
  std::mt19937 rng(seed);
  fs::create_directories(root / "data" / "wav");
  std::ofstream out(root / "data" / (split + ".jsonl"));
  for (int i = 0; i < n; ++i) {
    const int k = i % 3;
    const std::string name = split + "_" + std::to_string(i) + ".wav";
    const auto x = tone(k, rng);
    if (i % 4 == 0) {
      test::write_wav((root / "data" / "wav" / name).string(), {x, x}, 8000);  // stereo
    } else {
      test::write_wav((root / "data" / "wav" / name).string(), {x}, 8000);
    }
    out << nlohmann::json{{"audio", "wav/" + name}, {"label", kIntents[k]}}.dump() << "\n";
  }
  return (root / "data" / (split + ".jsonl")).string();
}

const char* kConfig = R"(runtime: {device: cpu, threads: 2, seed: 5}
data:
  train: data/train.jsonl
  val: data/val.jsonl
  test: data/test.jsonl
  audio: {n_mels: 32, max_seconds: 2}
  augment:
    enabled: true
    spec_augment: {time_masks: 1, time_width: 5, freq_masks: 1, freq_width: 3}
  loader: {batch_size: 8, eval_batch_size: 32, num_workers: 1}
model:
  modalities: [audio]
  audio_encoder: {channels: 4, hidden_size: 16, num_layers: 1}
  head: {hidden: [16], dropout: 0.0}
train:
  epochs: 12
  optimizer: {type: adamw, lr: 0.01, weight_decay: 0.0}
  scheduler: {type: constant}
  progress: lines
eval:
  splits: [val, test]
output: {dir: runs/audio}
)";

class AudioEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_split(dir_.path(), "train", 60, 1);
    write_split(dir_.path(), "val", 24, 2);
    write_split(dir_.path(), "test", 30, 3);
    config_ = dir_.write("audio.yaml", kConfig);
  }
  test::CliResult cli(const std::vector<std::string>& args) const {
    return test::run_cli(MMINTENT_CLI, args, dir_.path(), {}, dir_.path() / "cli_logs");
  }
  test::TempDir dir_;
  std::string config_;
};

TEST_F(AudioEndToEndTest, TrainsOnTonesPredictsAndRefusesACorruptFile) {
  const auto train = cli({"train", config_});
  ASSERT_EQ(train.code, 0) << train.dump();
  const auto run = dir_.path() / "runs" / "audio";
  std::ifstream in(run / "report.json");
  const auto report = nlohmann::json::parse(in);
  EXPECT_GE(report["test"]["accuracy"].get<double>(), 0.9) << report.dump();

  // One file: a clear low tone.
  std::mt19937 rng(77);
  const auto clip = (dir_.path() / "ask.wav").string();
  test::write_wav(clip, {test::sine(300, 8000, 6000, 0.5)}, 8000);
  const auto p = cli({"predict", run.string(), "--audio", clip});
  ASSERT_EQ(p.code, 0) << p.dump();
  EXPECT_NE(p.out.find("low"), std::string::npos) << p.out;
  std::istringstream lines(p.out);
  std::string first_intent_line;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("decision", 0) == 0 || line.rfind("out of scope", 0) == 0) continue;
    first_intent_line = line;
    break;
  }
  EXPECT_EQ(first_intent_line.rfind("low", 0), 0u) << p.out;

  // A manifest of audio paths, relative to the manifest's folder.
  const auto m = cli({"predict", run.string(), "--manifest", (dir_.path() / "data" / "test.jsonl").string(), "--out", "-"});
  ASSERT_EQ(m.code, 0) << m.dump();
  std::istringstream ml(m.out);
  std::string line;
  ASSERT_TRUE(std::getline(ml, line)) << m.dump();
  const auto j = nlohmann::json::parse(line);
  EXPECT_NE(j["audio"].get<std::string>().find("test_0.wav"), std::string::npos) << line;
  EXPECT_EQ(j["top"].size(), 3u) << line;

  // A corrupt file: predict and eval stop with exit 4 naming it.
  dir_.write("broken.wav", "RIFF....WAVEfmt this is not what it claims to be");
  const auto bad = cli({"predict", run.string(), "--audio", (dir_.path() / "broken.wav").string()});
  EXPECT_EQ(bad.code, 4) << bad.dump();
  EXPECT_NE(bad.error_line().find("broken.wav"), std::string::npos) << bad.dump();
  const auto missing = cli({"predict", run.string(), "--text", "hello"});
  EXPECT_EQ(missing.code, 4) << missing.dump();
  EXPECT_NE(missing.error_line().find("needs audio"), std::string::npos) << missing.dump();
}

}  // namespace
}  // namespace mmintent
