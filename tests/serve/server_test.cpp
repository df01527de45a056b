// The HTTP server (serve/server.h) through a real HTTP client (cpp-httplib) on loopback: every
// endpoint, each error status, API keys, the bounded queue, concurrent clients with
// micro-batching; a run trained once on the end-to-end fixture.

#include <gtest/gtest.h>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mmintent/app/tune.h"
#include "mmintent/config/loader.h"
#include "mmintent/data/feedback.h"
#include "mmintent/data/label_map.h"
#include "mmintent/error.h"
#include "mmintent/inference/predictor.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/serve/server.h"
#include "serve/auth.h"
#include "serve/metrics.h"
#include "serve/request.h"
#include "support/fixture.h"
#include "support/support.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string base64(const std::string& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += table[(v >> s) & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += table[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

/// One trained run shared by every test (the fixture trains in a few seconds).
class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    const auto root = dir_->path();
    run_dir_ = (root / "run").string();
    const auto config_path = test::write_fixture(root, run_dir_);
    test::train_quietly(config_path, {"train.epochs=2"});
    // A second run, another model (another seed), to reload.
    run_b_ = (root / "run_b").string();
    test::train_quietly(config_path, {"train.epochs=1", "runtime.seed=7", "output.dir=" + run_b_});
    // Two images of the fixture, one of each kind, as uploaded files.
    for (const auto& line : {0, 1}) {
      std::ifstream in(root / "data" / "val.jsonl");
      std::string text;
      for (int i = 0; i <= line; ++i) std::getline(in, text);
      const auto record = json::parse(text);
      samples_.push_back({record["text"], test::read_file((root / "data" / record["image"].get<std::string>()).string()),
                          (root / "data" / record["image"].get<std::string>()).string()});
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void TearDown() override { stop(); }

  /// Starts a server on a free loopback port with `config` and returns its port.
  int start(ServeConfig config = {}, const std::string& run_dir = "", const PredictorOptions& predictor = {}) {
    config.port = 0;
    server_ = std::make_unique<Server>(run_dir.empty() ? run_dir_ : run_dir, config, predictor);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
    return port_;
  }
  void stop() {
    if (!server_) return;
    server_->stop();
    thread_.join();
    server_.reset();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30, 0);
    return c;
  }
  httplib::Result post(const std::string& body, const httplib::Headers& headers = {}) const {
    return client().Post("/v1/predict", headers, body, "application/json");
  }
  static json request(int i, json extra = json::object()) {
    json j{{"text", samples_[i].text}, {"image", base64(samples_[i].image)}};
    for (auto& [k, v] : extra.items()) j[k] = v;
    return j;
  }
  /// The error of a refused request: (status, field).
  std::pair<int, std::string> refused(const std::string& body) const {
    auto r = post(body);
    if (!r) return {-1, "no response"};
    const auto j = json::parse(r->body);
    return {r->status, j["error"].value("field", "")};
  }

  struct Sample {
    std::string text, image, path;
  };
  static test::TempDir* dir_;
  static std::string run_dir_, run_b_;
  static std::vector<Sample> samples_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  int port_ = -1;
};
test::TempDir* ServerTest::dir_ = nullptr;
std::string ServerTest::run_dir_;
std::string ServerTest::run_b_;
std::vector<ServerTest::Sample> ServerTest::samples_;

TEST_F(ServerTest, HealthReadinessAndVersion) {
  start();
  auto c = client();
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto ready = c.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  const auto version = json::parse(ready->body)["model_version"].get<std::string>();
  EXPECT_EQ(version, serve::sha256_file_hex(run_dir_ + "/model.pt"));
  EXPECT_EQ(version, server_->model_version());
  auto missing = c.Get("/v2/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["status"], 404);
}

TEST_F(ServerTest, PredictMatchesThePredictorInProcess) {
  start();
  const auto predictor = Predictor::load(run_dir_);
  for (int i = 0; i < 2; ++i) {
    auto r = post(request(i, {{"top_k", 2}, {"rewrite", true}}).dump());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto j = json::parse(r->body);
    PredictInput in;
    in.text = samples_[i].text;
    in.image = samples_[i].path;
    const auto expected = predictor.predict(in, 2);
    ASSERT_EQ(j["top"].size(), 2u);
    for (size_t k = 0; k < 2; ++k) {
      EXPECT_EQ(j["top"][k]["intent"], expected.top[k].intent);
      EXPECT_NEAR(j["top"][k]["probability"].get<double>(), expected.top[k].probability, 1e-6);
    }
    EXPECT_EQ(j["decision"], to_string(expected.decision));
    EXPECT_NEAR(j["confidence"].get<double>(), expected.top[0].probability, 1e-6);
    EXPECT_EQ(j["model_version"], server_->model_version());
    EXPECT_EQ(j["id"].get<std::string>().size(), 24u);
    // rewrite: the fields of `predict --rewrite`
    const auto rw = predictor.rewrite(in, expected);
    EXPECT_EQ(j["text"], rw.text);
    EXPECT_EQ(j["request"], rw.request);
  }
}

TEST_F(ServerTest, BatchFormGivesOneResultPerInputInOrder) {
  start();
  auto single0 = json::parse(post(request(0).dump())->body);
  auto single1 = json::parse(post(request(1).dump())->body);
  auto r = post(json::array({request(0), request(1, {{"top_k", 1}})}).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto j = json::parse(r->body);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["top"][0]["intent"], single0["top"][0]["intent"]);
  EXPECT_EQ(j[1]["top"][0]["intent"], single1["top"][0]["intent"]);
  EXPECT_EQ(j[0]["top"].size(), 3u);  // serve.top_k
  EXPECT_EQ(j[1]["top"].size(), 1u);
  EXPECT_NE(j[0]["id"], j[1]["id"]);
  EXPECT_NE(j[0]["id"], single0["id"]);
}

TEST_F(ServerTest, EachBadFieldIsA400NamingIt) {
  start();
  const std::string image = base64(samples_[0].image);
  auto body = [&](json j) { return j.dump(); };
  EXPECT_EQ(refused(body({{"text", "a"}, {"image", image}, {"colour", "red"}})), std::make_pair(400, std::string("colour")));
  EXPECT_EQ(refused(body({{"text", 5}, {"image", image}})), std::make_pair(400, std::string("text")));
  EXPECT_EQ(refused(body({{"text", "a"}, {"image", "not base64!"}})), std::make_pair(400, std::string("image")));
  EXPECT_EQ(refused(body({{"text", "a"}, {"image", base64("this is no image")}})), std::make_pair(400, std::string("image")));
  EXPECT_EQ(refused(body({{"text", "a"}, {"image", base64(samples_[0].image.substr(0, 40))}})),
            std::make_pair(400, std::string("image")));
  EXPECT_EQ(refused(body({{"text", "a"}})), std::make_pair(400, std::string("image")));  // the model needs one
  EXPECT_EQ(refused(body({{"text", "a"}, {"image", image}, {"top_k", 0}})), std::make_pair(400, std::string("top_k")));
  EXPECT_EQ(refused(body({{"text", "a"}, {"image", image}, {"rewrite", "yes"}})), std::make_pair(400, std::string("rewrite")));
  EXPECT_EQ(refused(body(json::array({request(0), {{"text", "a"}, {"image", 7}}}))), std::make_pair(400, std::string("[1].image")));
  EXPECT_EQ(refused("{\"text\": \"caf\xe9\", \"image\": \"" + image + "\"}"), std::make_pair(400, std::string("text")));
  EXPECT_EQ(refused("{\"text\": \"a\""), std::make_pair(400, std::string("")));
  EXPECT_EQ(refused("[]"), std::make_pair(400, std::string("")));
  EXPECT_EQ(refused("\"text\""), std::make_pair(400, std::string("")));
  // The JSON error names the status and says why.
  const auto r = post(body({{"text", "a"}, {"image", base64("this is no image")}}));
  ASSERT_TRUE(r);
  const auto e = json::parse(r->body)["error"];
  EXPECT_EQ(e["status"], 400);
  EXPECT_NE(e["message"].get<std::string>().find("decode"), std::string::npos) << e.dump();
  // Not JSON at all.
  auto form = client().Post("/v1/predict", "text=a", "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 415);
}

TEST_F(ServerTest, LimitsGive413And503) {
  ServeConfig config;
  config.max_body_bytes = 2048;
  config.max_queue = 1;
  config.max_inputs = 3;
  start(config);
  EXPECT_EQ(refused(json{{"text", std::string(4096, 'a')}}.dump()).first, 413);
  // Two inputs can never fit a queue of one: refused at once, the server stays up.
  auto small = [](int) { return json{{"text", "a"}, {"image", base64(samples_[0].image)}}; };
  auto r = post(json::array({small(0), small(1)}).dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  EXPECT_EQ(refused(json::array({small(0), small(1), small(2), small(3)}).dump()).first, 413);  // max_inputs
  auto ok = post(small(0).dump());
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

TEST_F(ServerTest, ApiKeysGuardEveryEndpointButHealth) {
  const auto keys = dir_->write("keys.txt", "# clients\n" + serve::sha256_hex("s3cret") + "\n\n" +
                                                serve::sha256_hex("other-key") + "  # a second client\n");
  ServeConfig config;
  config.api_keys_file = keys;
  start(config);
  const std::string body = request(0).dump();
  auto r = post(body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(post(body, {{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(post(body, {{"Authorization", "s3cret"}})->status, 401);
  EXPECT_EQ(post(body, {{"Authorization", "Bearer s3cret"}})->status, 200);
  EXPECT_EQ(post(body, {{"Authorization", "Bearer other-key"}})->status, 200);
  auto c = client();
  EXPECT_EQ(c.Get("/metrics")->status, 401);
  EXPECT_EQ(c.Get("/metrics", {{"Authorization", "Bearer s3cret"}})->status, 200);
  EXPECT_EQ(c.Get("/healthz")->status, 200);
  EXPECT_EQ(c.Get("/readyz")->status, 200);
}

TEST_F(ServerTest, RefusesToExposeAnOpenServerOrBadKeys) {
  ServeConfig config;
  config.host = "0.0.0.0";
  try {
    Server server(run_dir_, config);
    FAIL() << "an unauthenticated non-loopback server was created";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("serve.api_keys_file"), std::string::npos) << e.what();
  }
  config.allow_unauthenticated = true;
  EXPECT_NO_THROW(Server(run_dir_, config));
  config.allow_unauthenticated = false;
  config.api_keys_file = dir_->write("plain_keys.txt", "my-plain-key\n");
  try {
    Server server(run_dir_, config);
    FAIL() << "a keys file holding a plain key was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("plain_keys.txt:1"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("my-plain-key"), std::string::npos) << "the key was echoed: " << e.what();
  }
}

TEST_F(ServerTest, ConcurrentClientsShareForwardPassesAndGetTheirOwnAnswers) {
  ServeConfig config;
  config.max_batch = 8;
  // The batcher waits for a request only once a handler has announced it; under a sanitizer on
  // a loaded machine reading one request can take longer than a few milliseconds, so the window
  // is wide (a full batch of 8 ends the wait at once).
  config.max_wait_ms = 250;
  start(config);
  const std::string expected0 = json::parse(post(request(0).dump())->body)["top"][0]["intent"];
  const std::string expected1 = json::parse(post(request(1).dump())->body)["top"][0]["intent"];
  constexpr int kClients = 8, kRounds = 6;
  // Each round starts together: the 8 clients send at once.
  std::mutex mutex;
  std::condition_variable cv;
  int arrived = 0, round = 0;
  auto wait_for_all = [&] {
    std::unique_lock<std::mutex> lock(mutex);
    const int mine = round;
    if (++arrived == kClients) {
      arrived = 0;
      ++round;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return round != mine; });
    }
  };
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      auto c = client();
      for (int k = 0; k < kRounds; ++k) {
        const int i = (t + k) % 2;
        wait_for_all();
        auto r = c.Post("/v1/predict", request(i).dump(), "application/json");
        if (!r || r->status != 200) {
          ++failed;
          continue;
        }
        if (json::parse(r->body)["top"][0]["intent"] != (i == 0 ? expected0 : expected1)) ++wrong;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  // A request is counted once its response is written (cpp-httplib's logger runs after the
  // write): the last client can read its answer a moment before the count moves.
  std::string metrics;
  const std::string counted = "mmintent_requests_total{endpoint=\"/v1/predict\",status=\"200\"} 50";
  for (int attempt = 0; attempt < 100; ++attempt) {
    metrics = client().Get("/metrics")->body;
    if (metrics.find(counted) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(metrics.find(counted), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mmintent_batch_size_count"), std::string::npos);
  EXPECT_NE(metrics.find("mmintent_model_info{version=\"" + server_->model_version()), std::string::npos);
  // Some forward pass held more than one input (6 rounds of 8 requests sent at once).
  EXPECT_EQ(metrics.find("mmintent_batch_size_bucket{le=\"1\"} 50"), std::string::npos) << metrics;
}

TEST_F(ServerTest, FeedbackIsLoggedDurablyInTheFormatTuneReads) {
  const auto folder = dir_->path() / "feedback_a";
  fs::create_directories(folder);
  ServeConfig config;
  config.feedback_log = (folder / "feedback.jsonl").string();
  start(config);
  const auto intents = Predictor::load(run_dir_).intents();
  std::vector<json> shown;
  for (int i = 0; i < 3; ++i) shown.push_back(json::parse(post(request(i % 2).dump())->body));
  auto feedback = [&](json body) { return client().Post("/v1/feedback", body.dump(), "application/json"); };
  const std::string other = shown[1]["top"][0]["intent"] == intents[0] ? intents[1] : intents[0];
  auto a = feedback({{"id", shown[0]["id"]}, {"reaction", "accepted"}});
  ASSERT_TRUE(a);
  EXPECT_EQ(a->status, 200) << a->body;
  EXPECT_EQ(json::parse(a->body)["recorded"], true);
  EXPECT_EQ(feedback({{"id", shown[1]["id"]}, {"reaction", "corrected"}, {"corrected_to", other}})->status, 200);
  EXPECT_EQ(feedback({{"id", shown[2]["id"]}, {"reaction", "rejected"}})->status, 200);
  // The whole-record form, for feedback on a prediction made elsewhere.
  auto whole = feedback({{"text", samples_[0].text}, {"image", base64(samples_[0].image)},
                         {"predicted", intents[2]}, {"reaction", "corrected"}, {"corrected_to", intents[3]}});
  EXPECT_EQ(whole->status, 200) << whole->body;

  // Refusals name their field.
  auto refused_feedback = [&](json body) {
    auto r = feedback(body);
    return std::make_pair(r->status, json::parse(r->body)["error"].value("field", ""));
  };
  EXPECT_EQ(refused_feedback({{"id", shown[0]["id"]}, {"reaction", "rejected"}}), std::make_pair(409, std::string("id")));
  EXPECT_EQ(refused_feedback({{"id", "feedface"}, {"reaction", "rejected"}}), std::make_pair(404, std::string("id")));
  EXPECT_EQ(refused_feedback({{"id", "x"}, {"reaction", "liked"}}), std::make_pair(400, std::string("reaction")));
  EXPECT_EQ(refused_feedback({{"id", "x"}, {"reaction", "corrected"}}), std::make_pair(400, std::string("corrected_to")));
  EXPECT_EQ(refused_feedback({{"id", "x"}, {"reaction", "corrected"}, {"corrected_to", "nope"}}),
            std::make_pair(400, std::string("corrected_to")));
  EXPECT_EQ(refused_feedback({{"reaction", "accepted"}, {"text", "a"}}), std::make_pair(400, std::string("predicted")));
  EXPECT_EQ(refused_feedback({{"id", "x"}, {"reaction", "accepted"}, {"text", "a"}}), std::make_pair(400, std::string("text")));
  stop();

  // What tune reads: every record, its image beside the log, in order.
  const auto log = read_feedback(config.feedback_log, LabelMap::from_labels(intents));
  ASSERT_EQ(log.records.size(), 4u);
  EXPECT_TRUE(log.skipped.empty());
  EXPECT_EQ(log.records[0].reaction, Reaction::accepted);
  EXPECT_EQ(log.records[0].predicted, shown[0]["top"][0]["intent"]);
  EXPECT_EQ(log.records[0].text, samples_[0].text);
  EXPECT_EQ(log.records[1].reaction, Reaction::corrected);
  EXPECT_EQ(log.records[1].corrected_to, other);
  EXPECT_EQ(log.records[2].reaction, Reaction::rejected);
  EXPECT_EQ(log.records[3].predicted, intents[2]);
  for (const auto& r : log.records) {
    ASSERT_TRUE(fs::exists(r.image)) << r.image;
    EXPECT_EQ(fs::path(r.image).parent_path(), folder / "feedback_images");
  }
  EXPECT_EQ(test::read_file(log.records[1].image), samples_[1].image);
  // The line carries what later learning needs: the probability shown and the model.
  std::ifstream in(config.feedback_log);
  std::string first;
  std::getline(in, first);
  const auto line = json::parse(first);
  EXPECT_NEAR(line["probability"].get<double>(), shown[0]["confidence"].get<double>(), 1e-12);
  EXPECT_EQ(line["model_version"], shown[0]["model_version"]);
  EXPECT_EQ(line["id"], shown[0]["id"]);
  // Without exploration the top intent is shown, with propensity 1, and logged so.
  EXPECT_EQ(shown[0]["shown"], shown[0]["top"][0]["intent"]);
  EXPECT_EQ(shown[0]["propensity"].get<double>(), 1.0);
  EXPECT_EQ(log.records[0].propensity, 1.0);
}

TEST_F(ServerTest, ExplorationShowsDrawnIntentsAndLogsTheirPropensities) {
  const auto folder = dir_->path() / "feedback_explore";
  fs::create_directories(folder);
  ServeConfig config;
  config.feedback_log = (folder / "feedback.jsonl").string();
  PredictorOptions po;
  po.explore_epsilon = 0.6;
  start(config, "", po);
  const auto intents = Predictor::load(run_dir_).intents();
  const double K = static_cast<double>(intents.size());
  int explored = 0;
  std::vector<json> shown;
  for (int i = 0; i < 40; ++i) {
    const auto j = json::parse(post(request(i % 2).dump())->body);
    const bool greedy = j["shown"] == j["top"][0]["intent"];
    explored += !greedy;
    EXPECT_NEAR(j["propensity"].get<double>(), (greedy ? 0.4 : 0.0) + 0.6 / K, 1e-12) << j.dump();
    shown.push_back(j);
  }
  // P(another intent than the top one) = 0.6 (K - 1) / K: 40 draws, well inside [3, 37].
  EXPECT_GE(explored, 3);
  EXPECT_LE(explored, 37);
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(client().Post("/v1/feedback", json{{"id", shown[i]["id"]}, {"reaction", "rejected"}}.dump(),
                            "application/json")->status, 200);
  }
  stop();
  // The log holds the intent shown and its propensity, which tune's off-policy objectives read.
  const auto log = read_feedback(config.feedback_log, LabelMap::from_labels(intents));
  ASSERT_EQ(log.records.size(), 4u);
  EXPECT_EQ(log.with_propensity, 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(log.records[i].predicted, shown[i]["shown"]);
    EXPECT_NEAR(log.records[i].propensity, shown[i]["propensity"].get<double>(), 1e-12);
  }
}

TEST_F(ServerTest, FeedbackLogCutsAnUnfinishedLineLeftByAKilledServer) {
  const auto folder = dir_->path() / "feedback_b";
  fs::create_directories(folder);
  ServeConfig config;
  config.feedback_log = (folder / "log.jsonl").string();
  const auto intents = Predictor::load(run_dir_).intents();
  const std::string good = json{{"text", "t"}, {"image", "x.png"}, {"predicted", intents[0]}, {"reaction", "accepted"}}.dump() + "\n";
  { std::ofstream(config.feedback_log) << good << "{\"text\": \"half a rec"; }
  start(config);
  const auto shown = json::parse(post(request(0).dump())->body);
  EXPECT_EQ(client().Post("/v1/feedback", json{{"id", shown["id"]}, {"reaction", "accepted"}}.dump(), "application/json")->status, 200);
  stop();
  std::ifstream in(config.feedback_log);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0] + "\n", good);
  EXPECT_EQ(json::parse(lines[1])["id"], shown["id"]);
}

TEST_F(ServerTest, FeedbackIsOffWithoutALog) {
  start();
  auto r = client().Post("/v1/feedback", json{{"id", "x"}, {"reaction", "accepted"}}.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_NE(r->body.find("serve.feedback_log"), std::string::npos) << r->body;
}

TEST_F(ServerTest, ServesItsPageAndDescribesTheModel) {
  ServeConfig config;
  config.api_keys_file = dir_->write("page_keys.txt", serve::sha256_hex("k") + "\n");
  start(config);
  auto c = client();
  // The page's static files need no key; the API they call does.
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(page->get_header_value("Content-Security-Policy").find("script-src 'self'"), std::string::npos);
  EXPECT_NE(page->body.find("<script src=\"/app.js\">"), std::string::npos);
  auto script = c.Get("/app.js");
  ASSERT_TRUE(script);
  EXPECT_EQ(script->status, 200);
  EXPECT_NE(script->body.find("/v1/feedback"), std::string::npos);
  EXPECT_EQ(c.Get("/v1/model")->status, 401);
  auto model = c.Get("/v1/model", {{"Authorization", "Bearer k"}});
  ASSERT_TRUE(model);
  ASSERT_EQ(model->status, 200) << model->body;
  const auto j = json::parse(model->body);
  EXPECT_EQ(j["model_version"], server_->model_version());
  const auto intents = Predictor::load(run_dir_).intents();
  ASSERT_EQ(j["intents"].size(), intents.size());
  EXPECT_EQ(j["intents"][0]["intent"], intents[0]);
  EXPECT_EQ(j["inputs"], json::array({"text", "image"}));
  EXPECT_EQ(j["feedback"], false);
}

TEST_F(ServerTest, ReloadSwapsTheModelAndABadRunKeepsTheOneServed) {
  start();
  const auto version_a = serve::sha256_file_hex(run_dir_ + "/model.pt");
  const auto version_b = serve::sha256_file_hex(run_b_ + "/model.pt");
  ASSERT_NE(version_a, version_b);
  auto reload = [&](const std::string& body) { return client().Post("/v1/admin/reload", body, "application/json"); };
  auto r = reload(json{{"run_dir", run_b_}}.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["model_version"], version_b);
  EXPECT_EQ(json::parse(r->body)["previous_model_version"], version_a);
  EXPECT_EQ(server_->model_version(), version_b);
  EXPECT_EQ(json::parse(client().Get("/readyz")->body)["model_version"], version_b);
  const auto predicted = json::parse(post(request(0).dump())->body);
  EXPECT_EQ(predicted["model_version"], version_b);
  // The served model's predictions are those of run B.
  PredictInput in(samples_[0].text, samples_[0].path);
  EXPECT_NEAR(predicted["confidence"].get<double>(), Predictor::load(run_b_).predict(in).top[0].probability, 1e-6);

  // Runs that cannot be loaded: a 422 naming the run, and run B still served.
  const auto broken = dir_->path() / "run_broken";
  fs::create_directories(broken);
  for (const auto& entry : fs::directory_iterator(run_b_)) {
    if (entry.is_regular_file()) fs::copy_file(entry.path(), broken / entry.path().filename());
  }
  { std::ofstream(broken / "model.pt", std::ios::trunc) << "not a model"; }
  for (const std::string& bad : {(dir_->path() / "no_such_run").string(), broken.string()}) {
    auto refused = reload(json{{"run_dir", bad}}.dump());
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 422) << refused->body;
    const auto e = json::parse(refused->body)["error"];
    EXPECT_EQ(e["field"], "run_dir");
    EXPECT_NE(e["message"].get<std::string>().find(bad), std::string::npos) << e.dump();
    EXPECT_NE(e["message"].get<std::string>().find("still serving"), std::string::npos) << e.dump();
    EXPECT_EQ(server_->model_version(), version_b);
    EXPECT_EQ(post(request(1).dump())->status, 200);
  }
  // Bad bodies name their field.
  EXPECT_EQ(json::parse(reload(json{{"dir", run_b_}}.dump())->body)["error"]["field"], "dir");
  EXPECT_EQ(json::parse(reload(json{{"run_dir", 3}}.dump())->body)["error"]["field"], "run_dir");
  EXPECT_EQ(reload("[1]")->status, 400);
  // No body: the served run directory again.
  auto again = reload("");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200) << again->body;
  EXPECT_EQ(json::parse(again->body)["run_dir"], run_b_);
  // Through the API as well.
  EXPECT_EQ(server_->reload(run_dir_), version_a);
  EXPECT_THROW(server_->reload(broken.string()), Error);
  const auto metrics = client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("mmintent_reloads_total{result=\"ok\"} 3"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mmintent_reloads_total{result=\"failed\"} 3"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mmintent_model_info{version=\"" + version_a), std::string::npos);
  EXPECT_EQ(metrics.find("mmintent_model_info{version=\"" + version_b), std::string::npos) << "the old version is still listed";
}

TEST_F(ServerTest, ServesAdaptersByNameOverTheOneBase) {
  // A low-rank adapter over the served run, tuned on corrections that move one sample's
  // prediction: its predictions differ from the base's.
  std::string log;
  const auto& wrong = "stock_right";
  for (int rep = 0; rep < 8; ++rep) {
    log += json{{"text", samples_[0].text}, {"image", samples_[0].path}, {"predicted", "refund_left"},
                {"reaction", "corrected"}, {"corrected_to", wrong}}.dump() + "\n";
  }
  const auto feedback = (dir_->path() / "adapter_feedback.jsonl").string();
  { std::ofstream(feedback) << log; }
  const auto lora = (dir_->path() / "run_lora").string();
  TuneOptions to;
  to.feedback = feedback;
  to.out_dir = lora;
  to.print_tables = false;
  to.overrides = {"tune.method=lora", "tune.lora.rank=4", "tune.lora.targets=[linear, rnn, embedding]",
                  "tune.epochs=3", "tune.lr=0.02", "train.early_stopping.enabled=false",
                  "train.early_stopping.restore_best=false"};
  tune_from_feedback(run_dir_, to);
  const auto version = RunDirectory(lora).weights_digest();
  const auto base_version = RunDirectory(run_dir_).weights_digest();

  ServeConfig config;
  config.adapters = {{"fix", lora}};
  config.feedback_log = (dir_->path() / "adapter_log.jsonl").string();
  start(config);
  EXPECT_EQ(server_->adapter_versions(), (std::map<std::string, std::string>{{"fix", version}}));
  const auto model = json::parse(client().Get("/v1/model")->body);
  EXPECT_EQ(model["adapters"], json::array({json{{"name", "fix"}, {"model_version", version}}})) << model.dump();

  // Each input gets its own model's prediction, in one request or in a mixed batch.
  const PredictInput in(samples_[0].text, samples_[0].path);
  const auto base_p = Predictor::load(run_dir_).predict(in, 4).top;
  const auto lora_p = Predictor::load(lora).predict(in, 4).top;
  double moved = 0;
  for (const auto& s : base_p) {
    for (const auto& t : lora_p) {
      if (s.intent == t.intent) moved = std::max(moved, std::abs(s.probability - t.probability));
    }
  }
  ASSERT_GT(moved, 0.01) << "the adapter changed nothing: the test could not tell the models apart";
  auto expect_from = [&](const json& j, const std::vector<IntentScore>& want, const std::string& v) {
    EXPECT_EQ(j["model_version"], v);
    ASSERT_EQ(j["top"].size(), 3u) << j.dump();
    for (std::size_t k = 0; k < 3; ++k) {
      EXPECT_EQ(j["top"][k]["intent"], want[k].intent) << j.dump();
      EXPECT_NEAR(j["top"][k]["probability"].get<double>(), want[k].probability, 1e-6) << j.dump();
    }
  };
  const auto one = json::parse(post(request(0, {{"adapter", "fix"}}).dump())->body);
  expect_from(one, lora_p, version);
  EXPECT_EQ(one["adapter"], "fix");
  const auto plain = json::parse(post(request(0, {{"adapter", nullptr}}).dump())->body);
  expect_from(plain, base_p, base_version);
  EXPECT_FALSE(plain.contains("adapter"));
  const auto mixed = json::parse(post(json::array({request(0, {{"adapter", "fix"}}), request(0),
                                                   request(0, {{"adapter", "fix"}})}).dump())->body);
  ASSERT_EQ(mixed.size(), 3u) << mixed.dump();
  expect_from(mixed[0], lora_p, version);
  expect_from(mixed[1], base_p, base_version);
  expect_from(mixed[2], lora_p, version);

  // An adapter the server does not hold, or not a name: 400 naming the field.
  EXPECT_EQ(refused(request(0, {{"adapter", "fox"}}).dump()), std::make_pair(400, std::string("adapter")));
  EXPECT_EQ(refused(request(0, {{"adapter", 3}}).dump()), std::make_pair(400, std::string("adapter")));
  EXPECT_EQ(refused(json::array({request(0), request(1, {{"adapter", "fox"}})}).dump()),
            std::make_pair(400, std::string("[1].adapter")));
  const auto message = json::parse(post(request(0, {{"adapter", "fox"}}).dump())->body)["error"]["message"];
  EXPECT_NE(message.get<std::string>().find("served: fix"), std::string::npos) << message;

  // Feedback on an adapter's prediction records which adapter, and its version.
  auto fb = client().Post("/v1/feedback", json{{"id", one["id"]}, {"reaction", "rejected"}}.dump(), "application/json");
  ASSERT_TRUE(fb);
  ASSERT_EQ(fb->status, 200) << fb->body;
  const auto line = json::parse(test::read_file(config.feedback_log));
  EXPECT_EQ(line["adapter"], "fix");
  EXPECT_EQ(line["model_version"], version);
  EXPECT_EQ(line["predicted"], one["shown"]);

  const auto metrics = client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("mmintent_adapter_info{adapter=\"fix\",version=\"" + version + "\""), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mmintent_adapter_predictions_total{adapter=\"fix\"} 3"), std::string::npos) << metrics;

  // Reload: the same adapters read again by default; a new set replaces them; an adapter over
  // other weights is refused (422 naming it) and the served ones stay.
  auto reload = [&](const json& body) { return client().Post("/v1/admin/reload", body.dump(), "application/json"); };
  auto r = reload(json::object());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["adapters"]["fix"]["model_version"], version);
  r = reload({{"run_dir", run_b_}});
  ASSERT_EQ(r->status, 422) << r->body;
  auto e = json::parse(r->body)["error"];
  EXPECT_EQ(e["field"], "adapters.fix") << e.dump();
  for (const auto& part : {"serve.adapters.fix", "tune it again", "still serving"}) {
    EXPECT_NE(e["message"].get<std::string>().find(part), std::string::npos) << part << ": " << e.dump();
  }
  EXPECT_EQ(server_->model_version(), base_version);
  r = reload({{"adapters", {{"other", run_b_}}}});
  ASSERT_EQ(r->status, 422) << r->body;
  e = json::parse(r->body)["error"];
  EXPECT_EQ(e["field"], "adapters.other");
  EXPECT_NE(e["message"].get<std::string>().find("not an adapter run"), std::string::npos) << e.dump();
  EXPECT_EQ(json::parse(reload({{"adapters", {{"a b", lora}}}})->body)["error"]["field"], "adapters.a b");
  EXPECT_EQ(json::parse(reload({{"adapters", 3}})->body)["error"]["field"], "adapters");
  EXPECT_EQ(server_->adapter_versions().size(), 1u);
  r = reload({{"run_dir", run_b_}, {"adapters", json::object()}});
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(server_->adapter_versions().empty());
  EXPECT_EQ(refused(request(0, {{"adapter", "fix"}}).dump()), std::make_pair(400, std::string("adapter")));
  EXPECT_EQ(client().Get("/metrics")->body.find("mmintent_adapter_info{"), std::string::npos);
  stop();

  // At start: an adapter over another run's weights is refused, naming the entry.
  config.feedback_log.clear();
  try {
    start(config, run_b_);
    FAIL() << "an adapter over other weights was served";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("serve.adapters.fix"), std::string::npos) << err.what();
    EXPECT_NE(std::string(err.what()).find(base_version.substr(0, 12)), std::string::npos) << err.what();
  }
}

TEST_F(ServerTest, ReloadUnderLoadFailsNoRequest) {
  ServeConfig config;
  config.max_batch = 4;
  start(config);
  const std::set<std::string> versions{serve::sha256_file_hex(run_dir_ + "/model.pt"), serve::sha256_file_hex(run_b_ + "/model.pt")};
  std::atomic<bool> done{false};
  std::atomic<int> ok{0}, failed{0}, unknown_version{0};
  std::mutex seen_mutex;
  std::set<std::string> seen;
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      auto c = client();
      for (int k = 0; !done || k < 3; ++k) {
        auto r = c.Post("/v1/predict", request((t + k) % 2).dump(), "application/json");
        if (!r || r->status != 200) {
          ++failed;
          continue;
        }
        ++ok;
        const std::string v = json::parse(r->body)["model_version"];
        if (!versions.count(v)) ++unknown_version;
        std::lock_guard<std::mutex> lock(seen_mutex);
        seen.insert(v);
      }
    });
  }
  for (int i = 0; i < 6; ++i) {
    // Each reload lands while the clients keep sending (some answers between two reloads).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (ok.load() < 6 * (i + 1) && failed.load() == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    auto r = client().Post("/v1/admin/reload", json{{"run_dir", i % 2 == 0 ? run_b_ : run_dir_}}.dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  done = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(unknown_version.load(), 0);
  EXPECT_GE(ok.load(), 36);
  EXPECT_EQ(seen, versions) << "requests saw only one of the two models";
}

TEST_F(ServerTest, AdminKeysGuardReloadApartFromApiKeys) {
  const auto api = dir_->write("api_keys_r.txt", serve::sha256_hex("client-key") + "\n");
  const auto admin = dir_->write("admin_keys_r.txt", serve::sha256_hex("admin-key") + "\n");
  ServeConfig config;
  config.api_keys_file = api;
  start(config);
  auto c = client();
  // API keys alone: the admin endpoints are off.
  auto off = c.Post("/v1/admin/reload", {{"Authorization", "Bearer client-key"}}, std::string(), "application/json");
  ASSERT_TRUE(off);
  EXPECT_EQ(off->status, 403);
  EXPECT_NE(off->body.find("serve.admin_keys_file"), std::string::npos) << off->body;
  stop();
  config.admin_keys_file = admin;
  start(config);
  auto c2 = client();
  EXPECT_EQ(c2.Post("/v1/admin/reload", {{"Authorization", "Bearer client-key"}}, std::string(), "application/json")->status, 401);
  EXPECT_EQ(c2.Post("/v1/admin/reload", std::string(), "application/json")->status, 401);
  EXPECT_EQ(c2.Post("/v1/admin/reload", {{"Authorization", "Bearer admin-key"}}, std::string(), "application/json")->status, 200);
  EXPECT_EQ(post(request(0).dump(), {{"Authorization", "Bearer admin-key"}})->status, 401);  // admin is not a client
  EXPECT_EQ(post(request(0).dump(), {{"Authorization", "Bearer client-key"}})->status, 200);
  stop();
  // One key in both files is refused at start.
  config.admin_keys_file = dir_->write("admin_keys_same.txt", serve::sha256_hex("client-key") + "\n");
  try {
    Server server(run_dir_, config);
    FAIL() << "an API key that is also an admin key was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("serve.admin_keys_file"), std::string::npos) << e.what();
  }
}

/// Writes a self-signed certificate for 127.0.0.1 (subjectAltName IP) and its key, PEM.
void write_self_signed(const std::string& cert_path, const std::string& key_path) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  ASSERT_NE(key, nullptr);
  X509* x = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  for (const auto& [nid, value] : {std::pair<int, const char*>{NID_subject_alt_name, "IP:127.0.0.1"},
                                   {NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    ASSERT_NE(ext, nullptr);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  ASSERT_GT(X509_sign(x, key, EVP_sha256()), 0);
  FILE* f = std::fopen(cert_path.c_str(), "w");
  PEM_write_X509(f, x);
  std::fclose(f);
  f = std::fopen(key_path.c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
}

TEST_F(ServerTest, ServesHttpsWithTheConfiguredCertificate) {
  const auto cert = (dir_->path() / "cert.pem").string();
  const auto key = (dir_->path() / "key.pem").string();
  write_self_signed(cert, key);
  ServeConfig config;
  config.tls.cert = cert;
  config.tls.key = key;
  start(config);
  EXPECT_TRUE(server_->tls());
  httplib::SSLClient https("127.0.0.1", port_);
  https.set_ca_cert_path(cert.c_str());
  https.enable_server_certificate_verification(true);
  https.set_read_timeout(30, 0);
  auto ready = https.Get("/readyz");
  ASSERT_TRUE(ready) << httplib::to_string(ready.error());
  EXPECT_EQ(ready->status, 200);
  auto r = https.Post("/v1/predict", request(0).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // Plain HTTP to the HTTPS port gets no answer.
  auto plain = client().Get("/readyz");
  EXPECT_FALSE(plain && plain->status == 200);
  stop();
  // A key that is not the certificate's: refused at start, naming serve.tls.
  const auto other_cert = (dir_->path() / "cert2.pem").string();
  const auto other_key = (dir_->path() / "key2.pem").string();
  write_self_signed(other_cert, other_key);
  config.tls.key = other_key;
  try {
    Server server(run_dir_, config);
    FAIL() << "a certificate with another's key was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("serve.tls"), std::string::npos) << e.what();
  }
}

TEST(ServeParts, Sha256AndBase64) {
  EXPECT_EQ(serve::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(serve::decode_base64("aGVsbG8=", "f"), "hello");
  EXPECT_EQ(serve::decode_base64("aGVs\nbG8", "f"), "hello");
  EXPECT_THROW(serve::decode_base64("aGVsbG8=x", "f"), serve::RequestError);
  EXPECT_THROW(serve::decode_base64("a", "f"), serve::RequestError);
  EXPECT_THROW(serve::decode_base64("", "f"), serve::RequestError);
}

TEST(ServeParts, MetricsTextFormat) {
  serve::Metrics m;
  m.declare("x_total", "counter", "Things.");
  m.declare_histogram("y_seconds", "Times.", {0.1, 1});
  m.add("x_total", {{"kind", "a\"b"}}, 2);
  m.observe("y_seconds", {}, 0.05);
  m.observe("y_seconds", {}, 5);
  EXPECT_EQ(m.render(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{kind=\"a\\\"b\"} 2\n"
            "# HELP y_seconds Times.\n# TYPE y_seconds histogram\n"
            "y_seconds_bucket{le=\"0.1\"} 1\ny_seconds_bucket{le=\"1\"} 1\ny_seconds_bucket{le=\"+Inf\"} 2\n"
            "y_seconds_sum 5.05\ny_seconds_count 2\n");
}

TEST(ServeConfigTest, ServeSectionIsReadAndChecked) {
  test::TempDir dir;
  const auto manifest = dir.write("t.jsonl", "{}\n");
  const std::string data = "data:\n  train: " + manifest + "\n  val: " + manifest + "\n  test: " + manifest + "\n";
  const auto c = parse_config(data + "serve:\n  port: 9000\n  max_batch: 4\n", "<test>");
  EXPECT_EQ(c.serve.port, 9000);
  EXPECT_EQ(c.serve.max_batch, 4);
  try {
    parse_config(data + "serve:\n  port: 70000\n", "<test>");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("serve.port"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_config(data + "serve:\n  batch: 4\n", "<test>"), ConfigError);
  // HTTPS needs both files.
  try {
    parse_config(data + "serve:\n  tls:\n    cert: " + manifest + "\n", "<test>");
    FAIL() << "a certificate without a key was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("serve.tls.key"), std::string::npos) << e.what();
  }
  const auto tls = parse_config(data + "serve:\n  tls:\n    cert: " + manifest + "\n    key: " + manifest + "\n", "<test>");
  EXPECT_EQ(tls.serve.tls.key, manifest);

  // Adapters: paths from the config's folder, or from the working directory on the command line.
  const auto file = (dir.path() / "c.yaml").string();
  const auto a = parse_config(data + "serve:\n  adapters:\n    support: runs/s\n", file, {"serve.adapters.shop=runs/p"});
  EXPECT_EQ(a.serve.adapters, (std::map<std::string, std::string>{{"support", (dir.path() / "runs/s").string()},
                                                                  {"shop", (fs::current_path() / "runs/p").string()}}));
  for (const std::string& bad : {"serve:\n  adapters:\n    \"a b\": runs/s\n", "serve:\n  adapters:\n    x: \n",
                                 "serve:\n  adapters: [runs/s]\n"}) {
    try {
      parse_config(data + bad, file);
      FAIL() << bad;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("serve.adapters"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace mmintent
