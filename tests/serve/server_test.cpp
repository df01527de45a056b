// The HTTP server (serve/server.h) through a real HTTP client (cpp-httplib) on loopback: every
// endpoint, each error status, API keys, the bounded queue, concurrent clients with
// micro-batching; a run trained once on the end-to-end fixture.

#include <gtest/gtest.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mmintent/app/run.h"
#include "mmintent/config/loader.h"
#include "mmintent/data/feedback.h"
#include "mmintent/data/label_map.h"
#include "mmintent/error.h"
#include "mmintent/inference/predictor.h"
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
    test::write_fixture_split(root, "train", 160, 1);
    test::write_fixture_split(root, "val", 40, 2);
    test::write_fixture_split(root, "test", 40, 3);
    run_dir_ = (root / "run").string();
    const auto config_path = dir_->write("config.yaml", test::fixture_config(run_dir_));
    TrainRunOptions options;
    options.print_tables = false;
    train_from_config(load_config(config_path, {"train.epochs=2"}), options);
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
  int start(ServeConfig config = {}) {
    config.port = 0;
    server_ = std::make_unique<Server>(run_dir_, config);
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
  static std::string run_dir_;
  static std::vector<Sample> samples_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  int port_ = -1;
};
test::TempDir* ServerTest::dir_ = nullptr;
std::string ServerTest::run_dir_;
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
  config.max_wait_ms = 5;
  start(config);
  const std::string expected0 = json::parse(post(request(0).dump())->body)["top"][0]["intent"];
  const std::string expected1 = json::parse(post(request(1).dump())->body)["top"][0]["intent"];
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      auto c = client();
      for (int k = 0; k < 6; ++k) {
        const int i = (t + k) % 2;
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
  const auto metrics = client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("mmintent_requests_total{endpoint=\"/v1/predict\",status=\"200\"} 50"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mmintent_batch_size_count"), std::string::npos);
  EXPECT_NE(metrics.find("mmintent_model_info{version=\"" + server_->model_version()), std::string::npos);
  // Some forward pass held more than one input (8 clients, 5 ms to fill a batch).
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
}

}  // namespace
}  // namespace mmintent
