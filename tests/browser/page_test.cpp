// The web page of `mmintent serve` in a real browser: a headless Chromium driven over its
// DevTools protocol loads the page from a running server, types a message, attaches a photo,
// reads the intent shown, posts a correction, and the feedback log holds it. Label "browser";
// skipped, saying why, only where no Chromium is installed or it cannot start.

#include <gtest/gtest.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "browser/cdp.h"
#include "mmintent/data/feedback.h"
#include "mmintent/data/label_map.h"
#include "mmintent/inference/predictor.h"
#include "mmintent/serve/server.h"
#include "serve/auth.h"
#include "support/fixture.h"
#include "support/support.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class WebPageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    const auto root = dir_->path();
    run_dir_ = (root / "run").string();
    test::train_quietly(test::write_fixture(root, run_dir_), {"train.epochs=2"});
    std::ifstream in(root / "data" / "val.jsonl");
    std::string line;
    std::getline(in, line);
    const auto record = json::parse(line);
    text_ = record["text"];
    image_ = (root / "data" / record["image"].get<std::string>()).string();
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    exe_ = test::Chromium::find();
    if (exe_.empty()) GTEST_SKIP() << "no Chromium installed (apt-get install chromium, or set MMINTENT_CHROMIUM)";
  }
  void TearDown() override {
    page_.reset();
    browser_.reset();
    if (server_) {
      server_->stop();
      thread_.join();
      server_.reset();
    }
  }

  void start_server(ServeConfig config) {
    config.port = 0;
    server_ = std::make_unique<Server>(run_dir_, config);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  /// Starts the browser on the server's page; false (the test then skips) when Chromium
  /// cannot start here.
  bool open_page() {
    try {
      browser_ = std::make_unique<test::Chromium>(exe_, dir_->path());
    } catch (const std::exception& e) {
      skip_reason_ = std::string("Chromium cannot start here: ") + e.what();
      return false;
    }
    page_ = std::make_unique<test::Cdp>(browser_->port(), browser_->page_path());
    page_->call("Runtime.enable");
    page_->call("Page.enable");
    page_->call("Page.navigate", {{"url", "http://127.0.0.1:" + std::to_string(port_) + "/"}});
    return true;
  }
  std::string text_of(const std::string& id) {
    return page_->evaluate("document.getElementById('" + id + "').textContent").get<std::string>();
  }
  void set_value(const std::string& id, const std::string& value) {
    page_->evaluate("document.getElementById('" + id + "').value = " + json(value).dump());
  }
  void click(const std::string& id) { page_->evaluate("document.getElementById('" + id + "').click()"); }
  void attach(const std::string& selector, const std::string& file) {
    const auto root = page_->call("DOM.getDocument")["root"]["nodeId"];
    const auto node = page_->call("DOM.querySelector", {{"nodeId", root}, {"selector", selector}})["nodeId"];
    page_->call("DOM.setFileInputFiles", {{"files", json::array({file})}, {"nodeId", node}});
  }

  static test::TempDir* dir_;
  static std::string run_dir_, text_, image_;
  std::string exe_, skip_reason_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  int port_ = -1;
  std::unique_ptr<test::Chromium> browser_;
  std::unique_ptr<test::Cdp> page_;
};
test::TempDir* WebPageTest::dir_ = nullptr;
std::string WebPageTest::run_dir_;
std::string WebPageTest::text_;
std::string WebPageTest::image_;

TEST_F(WebPageTest, AsksShowsTheIntentAndPostsACorrection) {
  const auto folder = dir_->path() / "feedback";
  fs::create_directories(folder);
  ServeConfig config;
  config.feedback_log = (folder / "feedback.jsonl").string();
  start_server(config);
  if (!open_page()) GTEST_SKIP() << skip_reason_;
  ASSERT_TRUE(page_->wait_for("document.body.dataset.ready === 'yes'")) << text_of("error");

  set_value("text", text_);
  attach("#image", image_);
  click("send");
  ASSERT_TRUE(page_->wait_for("document.getElementById('result').dataset.id")) << text_of("error");

  // What the page shows is what the model says for this text and photo.
  const auto predictor = Predictor::load(run_dir_);
  const auto expected = predictor.predict(PredictInput(text_, image_), 5);
  EXPECT_EQ(text_of("intent"), expected.top[0].intent);
  EXPECT_EQ(page_->evaluate("document.getElementById('decision').dataset.decision"), to_string(expected.decision));
  EXPECT_EQ(page_->evaluate("document.querySelectorAll('#top tbody tr').length"),
            std::min<size_t>(5, predictor.intents().size()));
  EXPECT_EQ(text_of("confidence").substr(0, 4), std::to_string(expected.top[0].probability).substr(0, 4));
  EXPECT_FALSE(text_of("request").empty()) << "the rewritten request is not shown";
  const std::string id = page_->evaluate("document.getElementById('result').dataset.id");

  // The person corrects it to another intent.
  const auto& intents = predictor.intents();
  const std::string other = intents[0] == expected.top[0].intent ? intents[1] : intents[0];
  set_value("correct-to", other);
  click("correct");
  ASSERT_TRUE(page_->wait_for("document.getElementById('feedback-status').dataset.state === 'recorded'"))
      << text_of("feedback-status");
  EXPECT_TRUE(page_->page_errors().empty()) << page_->page_errors().front();

  server_->stop();
  thread_.join();
  server_.reset();
  const auto log = read_feedback(config.feedback_log, LabelMap::from_labels(intents));
  ASSERT_EQ(log.records.size(), 1u);
  EXPECT_EQ(log.records[0].reaction, Reaction::corrected);
  EXPECT_EQ(log.records[0].corrected_to, other);
  EXPECT_EQ(log.records[0].predicted, expected.top[0].intent);
  EXPECT_EQ(log.records[0].text, text_);
  EXPECT_EQ(test::read_file(log.records[0].image), test::read_file(image_)) << "the photo is not the one attached";
  std::ifstream in(config.feedback_log);
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(json::parse(first)["id"], id);
}

TEST_F(WebPageTest, AsksForTheApiKeyWhenTheServerNeedsOne) {
  ServeConfig config;
  config.api_keys_file = dir_->write("keys.txt", serve::sha256_hex("page-key") + "\n");
  start_server(config);
  if (!open_page()) GTEST_SKIP() << skip_reason_;
  ASSERT_TRUE(page_->wait_for("document.body.dataset.ready === 'error'"));
  EXPECT_EQ(page_->evaluate("document.getElementById('key-row').hidden"), false);
  EXPECT_NE(text_of("error").find("API key"), std::string::npos) << text_of("error");
  set_value("key", "page-key");
  page_->evaluate("document.getElementById('key').dispatchEvent(new Event('change'))");
  ASSERT_TRUE(page_->wait_for("document.body.dataset.ready === 'yes'")) << text_of("error");
  set_value("text", text_);
  attach("#image", image_);
  click("send");
  ASSERT_TRUE(page_->wait_for("document.getElementById('result').dataset.id")) << text_of("error");
  // Feedback is off on this server: the buttons say so instead of failing.
  EXPECT_EQ(page_->evaluate("document.getElementById('correct').disabled"), true);
  EXPECT_NE(text_of("feedback-status").find("serve.feedback_log"), std::string::npos);
}

}  // namespace
}  // namespace mmintent
