#include "support/fixture.h"
#include "support/support.h"

#include "mmintent/app/run.h"
#include "mmintent/config/loader.h"

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <fstream>
#include <random>
#include <stdexcept>
#include <vector>

namespace mmintent::test {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::vector<std::vector<std::string>> kActionTexts = {
    {"i want to return this item", "please refund my purchase", "how do i send this back",
     "can i get my money back for this", "this arrived broken and i want a refund"},
    {"is this available in the store", "do you have this in stock",
     "when will this be back in stock", "can i buy this today",
     "how many of these do you have left"},
};
const std::vector<std::string> kOpenings = {"", "hi ", "hello ", "excuse me ", "good morning "};
const std::vector<std::string> kActions = {"refund", "stock"};
const std::vector<std::string> kKinds = {"left", "right"};



}  // namespace

/// A 16x16 grey image, bright on the left (kind 0) or on the right (kind 1), with noise.
cv::Mat fixture_image(int kind, std::mt19937& rng) {
  std::uniform_int_distribution<int> bright(170, 240), dark(15, 80);
  cv::Mat m(16, 16, CV_8UC1);
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) {
      const bool left = x < 8;
      m.at<uint8_t>(y, x) = static_cast<uint8_t>((left == (kind == 0)) ? bright(rng) : dark(rng));
    }
  }
  return m;
}

/// Writes data/<split>.jsonl with `n` samples (balanced over the 4 intents) and their images
/// under data/img/; returns the manifest path.
std::string write_fixture_split(const fs::path& root, const std::string& split, int n, unsigned seed) {
  std::mt19937 rng(seed);
  const fs::path data = root / "data";
  fs::create_directories(data / "img");
  std::ofstream out(data / (split + ".jsonl"));
  for (int i = 0; i < n; ++i) {
    const int label = i % 4, action = label / 2, kind = label % 2;
    const auto& texts = kActionTexts[action];
    const std::string text = kOpenings[rng() % kOpenings.size()] + texts[rng() % texts.size()];
    const std::string image = "img/" + split + "_" + std::to_string(i) + ".png";
    if (!cv::imwrite((data / image).string(), fixture_image(kind, rng))) {
      throw std::runtime_error("cannot write " + (data / image).string());
    }
    out << json{{"text", text}, {"image", image}, {"label", fixture_intent(action, kind)}}.dump()
        << "\n";
  }
  return (data / (split + ".jsonl")).string();
}

/// The config for the fixture, with data paths relative to the config's folder.
std::string fixture_config(const std::string& output_dir) {
  return test::fixture_text("configs/e2e_fixture.yaml") + "output:\n  dir: " + output_dir +
         "\n  overwrite: false\n";
}

std::string fixture_intent(int action, int kind) { return kActions[action] + "_" + kKinds[kind]; }

std::string write_fixture(const std::filesystem::path& root, const std::string& output_dir) {
  write_fixture_split(root, "train", 160, 1);
  write_fixture_split(root, "val", 40, 2);
  write_fixture_split(root, "test", 40, 3);
  const auto path = (root / "config.yaml").string();
  std::ofstream(path) << fixture_config(output_dir);
  return path;
}

void train_quietly(const std::string& config, const std::vector<std::string>& overrides) {
  TrainRunOptions options;
  options.print_tables = false;
  train_from_config(load_config(config, overrides), options);
}

}  // namespace mmintent::test
