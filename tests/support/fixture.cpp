#include "support/fixture.h"

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
  return R"(runtime:
  device: cpu
  threads: 2
  seed: 7
data:
  train: data/train.jsonl
  val: data/val.jsonl
  test: data/test.jsonl
  image:
    width: 16
    height: 16
    channels: 1
    mean: [0.5]
    std: [0.5]
  augment:
    enabled: false
  text:
    train: {vocab_size: 60, model_type: unigram}
    max_length: 16
  loader:
    batch_size: 16
    eval_batch_size: 64
    num_workers: 1
model:
  modalities: [text, image]
  text_encoder:
    type: gru
    embedding_dim: 16
    hidden_size: 16
    num_layers: 1
    bidirectional: false
    pooling: max
  image_encoder:
    channels: [8, 16]
    kernel_size: 3
    batch_norm: true
    pool: max
    dropout: 0.0
    out_dim: 32
  fusion: {type: concat}
  head: {hidden: [32], dropout: 0.0}
train:
  epochs: 6
  optimizer: {type: adamw, lr: 0.01, weight_decay: 0.0}
  scheduler: {type: constant}
  progress: lines
  early_stopping:
    metric: val.accuracy
    mode: max
    patience: 10
eval:
  splits: [val, test]
output:
  dir: )" +
         output_dir + R"(
  overwrite: false
)";
}

std::string fixture_intent(int action, int kind) { return kActions[action] + "_" + kKinds[kind]; }

}  // namespace mmintent::test
