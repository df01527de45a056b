// The server with an audio model: /v1/predict takes the audio file's bytes as base64 (or a
// data: URL), answers as the predictor in process does, refuses bad or missing audio with a 400
// naming the field; /v1/feedback keeps the uploaded audio beside the log, where `mmintent tune`
// reads it, and a tune on that log runs.
#include <gtest/gtest.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "mmintent/app/tune.h"
#include "mmintent/data/audio.h"
#include "mmintent/data/feedback.h"
#include "mmintent/data/label_map.h"
#include "mmintent/inference/predictor.h"
#include "mmintent/serve/server.h"
#include "serve/request.h"
#include "support/audio.h"
#include "support/fixture.h"
#include "support/support.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string base64(const std::string& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k) v = (v << 8) | (k < n ? uint8_t(bytes[i + k]) : 0);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? table[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

class AudioServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    run_dir_ = (dir_->path() / "run").string();
    test::train_quietly(test::write_tone_fixture(dir_->path(), run_dir_), {});
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void TearDown() override {
    if (server_) {
      server_->stop();
      thread_.join();
    }
  }
  void start(ServeConfig config = {}) {
    config.port = 0;
    server_ = std::make_unique<Server>(run_dir_, config);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  httplib::Result post(const std::string& path, const json& body) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30, 0);
    return c.Post(path, body.dump(), "application/json");
  }
  /// A tone of intent k as a WAV file's bytes.
  static std::string tone_file(int k, unsigned seed) {
    std::mt19937 rng(seed);
    const auto path = (dir_->path() / ("tone_" + std::to_string(k) + "_" + std::to_string(seed) + ".wav")).string();
    test::write_wav(path, {test::tone(k, rng)}, 8000);
    return test::read_file(path);
  }

  static test::TempDir* dir_;
  static std::string run_dir_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  int port_ = -1;
};
test::TempDir* AudioServerTest::dir_ = nullptr;
std::string AudioServerTest::run_dir_;

TEST_F(AudioServerTest, PredictsFromUploadedAudioAsThePredictorDoes) {
  start();
  const auto predictor = Predictor::load(run_dir_);
  for (int k = 0; k < 3; ++k) {
    const std::string bytes = tone_file(k, 100 + k);
    auto r = post("/v1/predict", {{"audio", base64(bytes)}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto j = json::parse(r->body);
    PredictInput in;
    in.audio_samples = std::make_shared<const DecodedAudio>(decode_audio_bytes(bytes, "upload", predictor.config().data.audio));
    const auto p = predictor.predict(in, 3);
    EXPECT_EQ(j["top"][0]["intent"], p.top[0].intent);
    EXPECT_NEAR(j["top"][0]["probability"].get<double>(), p.top[0].probability, 1e-5);
    EXPECT_EQ(p.top[0].intent, test::tone_intents()[k]) << "a clear tone of " << test::tone_intents()[k];
    // The same through a file path, and as a data: URL.
    const auto path = (dir_->path() / "same.wav").string();
    std::ofstream(path, std::ios::binary) << bytes;
    PredictInput by_path;
    by_path.audio = path;
    EXPECT_NEAR(predictor.predict(by_path, 3).top[0].probability, p.top[0].probability, 1e-5);
    auto url = post("/v1/predict", {{"audio", "data:audio/wav;base64," + base64(bytes)}});
    EXPECT_EQ(json::parse(url->body)["top"][0]["intent"], p.top[0].intent);
  }
  // Refusals: not audio, not base64, missing, wrong type.
  auto field_of = [&](const json& body) {
    auto r = post("/v1/predict", body);
    return std::make_pair(r->status, json::parse(r->body)["error"].value("field", ""));
  };
  EXPECT_EQ(field_of({{"audio", base64("RIFF....WAVEnot really")}}), std::make_pair(400, std::string("audio")));
  EXPECT_EQ(field_of({{"audio", "%%%"}}), std::make_pair(400, std::string("audio")));
  EXPECT_EQ(field_of({{"text", "hello"}}), std::make_pair(400, std::string("audio")));
  EXPECT_EQ(field_of({{"audio", 5}}), std::make_pair(400, std::string("audio")));
  auto bad = post("/v1/predict", {{"audio", base64("RIFF....WAVEnot really")}});
  EXPECT_NE(json::parse(bad->body)["error"]["message"].get<std::string>().find("not an audio file"), std::string::npos)
      << bad->body;
}

TEST_F(AudioServerTest, FeedbackKeepsTheAudioWhereTuneReadsIt) {
  const auto folder = dir_->path() / "feedback";
  fs::create_directories(folder);
  ServeConfig config;
  config.feedback_log = (folder / "log.jsonl").string();
  start(config);
  std::vector<std::string> uploads;
  for (int i = 0; i < 6; ++i) {
    uploads.push_back(tone_file(i % 3, 200 + i));
    const auto shown = json::parse(post("/v1/predict", {{"audio", base64(uploads.back())}})->body);
    const std::string predicted = shown["top"][0]["intent"];
    const std::string right = test::tone_intents()[i % 3];
    json f{{"id", shown["id"]}, {"reaction", predicted == right ? "accepted" : "corrected"}};
    if (predicted != right) f["corrected_to"] = right;
    auto r = post("/v1/feedback", f);
    ASSERT_EQ(r->status, 200) << r->body;
  }
  server_->stop();
  thread_.join();
  server_.reset();

  const auto labels = LabelMap::from_labels(test::tone_intents());
  FeedbackReadOptions fo;
  fo.use_text = fo.use_image = false;
  fo.plugins["audio"] = "audio";
  fo.path_inputs.insert("audio");
  const auto log = read_feedback(config.feedback_log, labels, fo);
  ASSERT_EQ(log.records.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const auto& path = log.records[i].inputs.at("audio");
    EXPECT_EQ(fs::path(path).parent_path(), folder / "log_audio");
    EXPECT_EQ(test::read_file(path), uploads[i]);
  }
  // tune reads the log (its audio beside it) and writes a new run.
  TuneOptions options;
  options.feedback = config.feedback_log;
  options.out_dir = (dir_->path() / "tuned").string();
  options.overrides = {"tune.epochs=1"};
  options.print_tables = false;
  const auto result = tune_from_feedback(run_dir_, options);
  EXPECT_EQ(result.accepted + result.corrected, 6);
  EXPECT_TRUE(fs::exists(fs::path(options.out_dir) / "model.pt"));
}

}  // namespace
}  // namespace mmintent
