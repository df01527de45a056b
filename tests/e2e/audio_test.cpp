// The audio modality end to end through the `mmintent` CLI: support/audio.h's tone fixture (one
// pitch band per intent; 8 kHz mono and stereo files, resampled to 16 kHz) trains audio-only to
// a high test accuracy; predict --audio and --manifest answer for audio; a corrupt audio file is
// exit 4 naming it.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <torch/torch.h>
#include <sstream>
#include <string>
#include <vector>

#include "mmintent/config/loader.h"
#include "mmintent/data/audio.h"
#include "mmintent/data/audio_features.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/run/setup.h"
#include "support/audio.h"
#include "support/cli.h"
#include "support/support.h"

#ifndef MMINTENT_CLI
#error "MMINTENT_CLI must name the built mmintent executable"
#endif

namespace mmintent {
namespace {

namespace fs = std::filesystem;

class AudioEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override { config_ = test::write_tone_fixture(dir_.path(), "runs/audio"); }
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

/// data.audio.normalize global: the training split's band statistics are fitted before training,
/// logged, kept in model.pt (not the initial zeros and ones) and used again by eval, which
/// gives the report's accuracy back.
TEST_F(AudioEndToEndTest, GlobalNormalisationIsFittedOnTrainAndKeptInTheRun) {
  const auto train = cli({"train", config_, "data.audio.normalize=global", "output.dir=runs/global"});
  ASSERT_EQ(train.code, 0) << train.dump();
  EXPECT_NE(train.err.find("global normalisation fitted on"), std::string::npos) << train.dump();
  const auto run = dir_.path() / "runs" / "global";
  std::ifstream in(run / "report.json");
  const auto report = nlohmann::json::parse(in);
  const double accuracy = report["test"]["accuracy"].get<double>();
  EXPECT_GE(accuracy, 0.9) << report.dump();

  const RunDirectory run_dir(run.string());
  const Config config = run_dir.load_config();
  EXPECT_EQ(config.data.audio.normalize, "global");
  auto model = load_run_model(run_dir, config, load_run_data(run_dir, config), c10::Device(c10::kCPU));
  auto buffers = model->named_buffers();
  ASSERT_TRUE(buffers.contains("audio_encoder.feature_mean"));
  // Computed here without the loader: every training file decoded, its log-mel frames summed.
  std::vector<double> sum(32, 0.0), sum_sq(32, 0.0);
  int64_t frames = 0;
  const LogMelExtractor mel(config.data.audio);
  std::ifstream manifest(dir_.path() / "data" / "train.jsonl");
  for (std::string line; std::getline(manifest, line);) {
    const auto clip = decode_audio_file((dir_.path() / "data" / nlohmann::json::parse(line).at("audio").get<std::string>()).string(),
                                        config.data.audio);
    const auto f = mel.compute(clip.samples.data(), static_cast<int64_t>(clip.samples.size()));
    for (size_t k = 0; k < f.size(); ++k) {
      sum[k % 32] += f[k];
      sum_sq[k % 32] += double(f[k]) * f[k];
    }
    frames += static_cast<int64_t>(f.size()) / 32;
  }
  ASSERT_EQ(frames > 0, true);
  const auto mean = buffers["audio_encoder.feature_mean"];
  const auto deviation = buffers["audio_encoder.feature_std"];
  ASSERT_EQ(mean.numel(), 32);
  for (int64_t d = 0; d < 32; ++d) {
    const double m = sum[d] / double(frames);
    EXPECT_NEAR(mean[d].item<double>(), m, 1e-3 * (1 + std::abs(m))) << "band " << d;
    EXPECT_NEAR(deviation[d].item<double>(), std::sqrt(sum_sq[d] / double(frames) - m * m), 1e-3) << "band " << d;
  }

  const auto eval = cli({"eval", run.string(), "--json"});
  ASSERT_EQ(eval.code, 0) << eval.dump();
  const auto j = nlohmann::json::parse(eval.out);
  EXPECT_DOUBLE_EQ(j.at("metrics").at("accuracy").get<double>(), accuracy) << eval.out;
}

/// model.init: a second run takes its audio encoder from a first (its log says so, and its
/// model starts from those weights); a part the model lacks is exit 3 naming the key, before
/// the run directory is written.
TEST_F(AudioEndToEndTest, WarmStartTakesTheAudioEncoderFromAnotherRun) {
  ASSERT_EQ(cli({"train", config_, "train.epochs=2"}).code, 0);
  const auto first = dir_.path() / "runs" / "audio";
  const auto second = cli({"train", config_, "train.epochs=1", "train.optimizer.lr=1e-9", "model.init.from=" + first.string(),
                           "model.init.modules=[audio_encoder]", "output.dir=runs/warm"});
  ASSERT_EQ(second.code, 0) << second.dump();
  EXPECT_NE(second.err.find("model.init: "), std::string::npos) << second.dump();
  EXPECT_NE(second.err.find("of audio_encoder from " + (first / "model.pt").string()), std::string::npos) << second.dump();
  // With a learning rate of 1e-9 the encoder is still the first run's.
  const auto load = [](const fs::path& dir) {
    const RunDirectory run(dir.string());
    const Config config = run.load_config();
    return load_run_model(run, config, load_run_data(run, config), c10::Device(c10::kCPU));
  };
  auto a = load(first), b = load(dir_.path() / "runs" / "warm");
  auto pb = b->named_parameters();
  for (const auto& p : a->named_parameters()) {
    if (p.key().rfind("audio_encoder.", 0) == 0) {
      EXPECT_TRUE(torch::allclose(p.value(), pb[p.key()], 0, 1e-6)) << p.key();
    }
  }

  const auto bad = cli({"train", config_, "model.init.from=" + first.string(), "model.init.modules=[speech_encoder]",
                        "output.dir=runs/bad"});
  EXPECT_EQ(bad.code, 3) << bad.dump();
  EXPECT_NE(bad.error_line().find("model.init"), std::string::npos) << bad.dump();
  EXPECT_NE(bad.error_line().find("'speech_encoder' names no part of this model"), std::string::npos) << bad.dump();
  EXPECT_FALSE(fs::exists(dir_.path() / "runs" / "bad"));
  const auto missing = cli({"train", config_, "model.init.from=nowhere", "output.dir=runs/bad"});
  EXPECT_EQ(missing.code, 3) << missing.dump();
  EXPECT_NE(missing.error_line().find("does not exist"), std::string::npos) << missing.dump();
  EXPECT_FALSE(fs::exists(dir_.path() / "runs" / "bad"));
}

}  // namespace
}  // namespace mmintent
