#pragma once
/// Shared set-up of the benchmark programs in bench/: a data set to measure on (a real
/// manifest, or a generated demo-like one), the configs of the repository loaded against it,
/// and small helpers. Header-only: each benchmark program is one translation unit.

#include "mmintent/app/run.h"
#include "mmintent/run/setup.h"
#include "mmintent/config/loader.h"
#include "mmintent/data/dataset.h"
#include "mmintent/data/manifest.h"
#include "mmintent/data/tokenizer.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/loss.h"
#include "mmintent/training/optimization.h"

#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#ifndef MMINTENT_SOURCE_DIR
#error "MMINTENT_SOURCE_DIR must name the repository root (bench/CMakeLists.txt sets it)"
#endif

namespace mmintent::bench {
namespace fs = std::filesystem;

/// A folder under the temp dir, removed at exit.
class ScratchFolder {
 public:
  ScratchFolder() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("mmintent_bench_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~ScratchFolder() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// Writes a demo-like data set (the shape of data/demo: a short customer message, a 28x28 grey
/// PNG, 12 intents) of `n` samples into `dir`, plus one 640x480 colour JPEG (`large.jpg`) to
/// measure decoding and resizing of a camera-sized photo. Returns the manifest path.
inline std::string write_synthetic(const fs::path& dir, int n, uint64_t seed = 7) {
  static const char* kActions[] = {"can i send this back", "do you have this in stock",
                                   "how do i wash this", "i want to return this",
                                   "is this available in my size", "how should i clean it"};
  static const char* kFillers[] = {"hello", "please", "thanks a lot", "quick question",
                                   "for my daughter", "bought last week", "", "hi team"};
  static const char* kProducts[] = {"shirt", "trousers", "boots", "bag"};
  std::mt19937_64 rng(seed);
  fs::create_directories(dir / "images");
  std::ofstream out(dir / "train.jsonl");
  for (int i = 0; i < n; ++i) {
    const int action = static_cast<int>(rng() % 3), product = static_cast<int>(rng() % 4);
    cv::Mat img(28, 28, CV_8UC1);
    cv::randu(img, 0, 64);
    cv::circle(img, {14, 14}, 4 + product * 2, cv::Scalar(200), -1);
    const std::string name = "images/" + std::to_string(i) + ".png";
    cv::imwrite((dir / name).string(), img);
    std::string text = std::string(kFillers[rng() % 8]) + " " + kActions[action * 2 + rng() % 2];
    if (rng() % 5 == 0) text += std::string(" ") + kProducts[product];
    out << "{\"text\": \"" << text << "?\", \"image\": \"" << name << "\", \"label\": \"intent_"
        << action << "_" << product << "\"}\n";
  }
  cv::Mat large(480, 640, CV_8UC3);
  cv::randu(large, 0, 255);
  cv::GaussianBlur(large, large, {9, 9}, 3);
  cv::imwrite((dir / "large.jpg").string(), large);
  return (dir / "train.jsonl").string();
}

/// The repository's config `name` (configs/<name>.yaml) with every split pointed at
/// `manifest`, so that it validates whatever data is on disk.
inline Config repo_config(const std::string& name, const std::string& manifest,
                          std::vector<std::string> overrides = {}) {
  overrides.insert(overrides.begin(),
                   {"data.train=" + manifest, "data.val=" + manifest, "data.test=" + manifest});
  return load_config(std::string(MMINTENT_SOURCE_DIR) + "/configs/" + name + ".yaml", overrides);
}

/// Everything the component benchmarks use, built once.
struct Fixture {
  std::unique_ptr<ScratchFolder> scratch;
  std::string manifest;      ///< the training manifest measured on
  std::string large_image;   ///< a camera-sized JPEG (generated)
  Config demo;               ///< configs/demo.yaml against `manifest`
  std::shared_ptr<const Tokenizer> tokenizer;
  RunData data;              ///< labels, tokenizer and the training split of `manifest`
  std::vector<std::string> texts;

  /// `manifest` empty: a generated data set of `synthetic_n` samples.
  static Fixture& get(const std::string& manifest = "", int synthetic_n = 1024) {
    static Fixture f(manifest, synthetic_n);
    return f;
  }

 private:
  Fixture(const std::string& real_manifest, int synthetic_n) {
    scratch = std::make_unique<ScratchFolder>();
    const std::string synthetic = write_synthetic(scratch->path() / "synthetic", synthetic_n);
    large_image = (scratch->path() / "synthetic" / "large.jpg").string();
    manifest = real_manifest.empty() ? synthetic : real_manifest;
    demo = repo_config("demo", manifest);
    const auto m = read_manifest(manifest, manifest_read_options(demo, true));
    std::vector<std::string> labels;
    for (const auto& r : m.records) {
      texts.push_back(r.text);
      labels.push_back(r.label);
    }
    TokenizerTrainOptions to;
    to.vocab_size = demo.data.text.train.vocab_size;
    to.model_type = demo.data.text.train.model_type;
    tokenizer = std::make_shared<Tokenizer>(
        Tokenizer::train(texts, (scratch->path() / "tok" / "spm").string(), to));
    data.labels = LabelMap::from_labels(labels);
    data.tokenizer = tokenizer;
    data.train = std::make_shared<MultimodalDataset>(m, &data.labels, tokenizer, dataset_options(demo));
  }
};

/// What Trainer::train_epoch does per batch: forward, per-sample loss, backward, gradient
/// clipping, AdamW step (the schedule's learning-rate update is left out: it costs nothing).
struct Step {
  IntentClassifier model{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  TrainerOptions options;

  Step(const Config& c, int64_t vocab, int64_t classes) {
    torch::manual_seed(0);
    model = IntentClassifier(c.model_options(vocab, classes));
    model->train();
    options = c.trainer_options();
    optimizer = make_optimizer(model->parameters(), options.optimizer);
  }
  /// One step on `b`; returns the loss.
  double operator()(const Batch& b) {
    optimizer->zero_grad();
    auto logits = model->forward(b);
    auto loss = per_sample_loss(logits, b, options.loss).sum() / static_cast<double>(b.size());
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(),
                                      options.grad_clip > 0 ? options.grad_clip : 1e30);
    optimizer->step();
    return loss.item<double>();
  }
};

/// Seconds since `t0`.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace mmintent::bench
