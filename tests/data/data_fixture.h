#pragma once
/// The data sets the dataset and loader tests share: 8x8 PNGs written with OpenCV, a JSONL
/// manifest and a small sentencepiece tokenizer in a temporary folder.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "mmintent/core/batch.h"
#include "mmintent/data/dataset.h"
#include "mmintent/data/label_map.h"
#include "mmintent/data/manifest.h"
#include "mmintent/data/tokenizer.h"
#include "support/support.h"

namespace mmintent::test {

/// Ten texts of different lengths (the last one the longest) and three labels.
extern const std::vector<std::string> kTexts;
extern const std::vector<std::string> kLabels;

/// An 8x8 grey image whose pixels depend on `seed`, so every sample's image differs.
cv::Mat grey_pattern(int seed);

/// Same definedness, shape, type and values (a failure names `what`).
void expect_same_tensor(const at::Tensor& a, const at::Tensor& b, const std::string& what);

/// expect_same_tensor for each member of the batches.
void expect_same_batch(const Batch& a, const Batch& b, const std::string& what);

/// The values of an int64 tensor.
std::vector<int64_t> to_vector(const at::Tensor& t);

/// A temp dir with images, manifests and a tokenizer trained on kTexts (vocabulary ~40).
class DataFixture : public SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    TokenizerTrainOptions o;
    o.vocab_size = 40;
    o.model_type = "unigram";
    tokenizer_ = std::make_shared<Tokenizer>(
        Tokenizer::train(kTexts, (dir_.path() / "tok" / "spm").string(), o));
    labels_ = LabelMap::from_labels(kLabels);
  }

  /// Writes a grey 8x8 PNG "img_<seed>.png" and returns its file name (relative).
  std::string write_png(int seed) const {
    const std::string name = "img_" + std::to_string(seed) + ".png";
    EXPECT_TRUE(cv::imwrite((dir_.path() / name).string(), grey_pattern(seed)));
    return name;
  }

  /// n records: text kTexts[i % 10], image img_i.png, label kLabels[i % 3].
  std::vector<nlohmann::json> default_records(int n) const {
    std::vector<nlohmann::json> out;
    for (int i = 0; i < n; ++i) {
      out.push_back({{"text", kTexts[i % kTexts.size()]},
                     {"image", write_png(i)},
                     {"label", kLabels[i % kLabels.size()]}});
    }
    return out;
  }

  /// Writes the records as JSONL (one per line, line i+1 = record i) and returns the path.
  std::string write_manifest(const std::vector<nlohmann::json>& records,
                             const std::string& name = "data.jsonl") const {
    std::string text;
    for (const auto& r : records) text += r.dump() + "\n";
    return dir_.write(name, text);
  }

  Manifest read(const std::string& path, bool allow_missing_text = false,
                bool allow_missing_image = false) const {
    ManifestReadOptions o;
    o.allow_missing_text = allow_missing_text;
    o.allow_missing_image = allow_missing_image;
    return read_manifest(path, o);
  }

  static DatasetOptions options() {
    DatasetOptions o;
    o.image.width = 8;
    o.image.height = 8;
    o.image.channels = 1;
    o.image.mean = {0.5};
    o.image.std = {0.5};
    o.max_length = 64;
    o.cache_images = true;
    return o;
  }

  std::shared_ptr<MultimodalDataset> make(const std::string& manifest_path, DatasetOptions o,
                                          bool allow_missing_text = false,
                                          bool allow_missing_image = false) const {
    return std::make_shared<MultimodalDataset>(
        read(manifest_path, allow_missing_text, allow_missing_image), &labels_, tokenizer_,
        std::move(o));
  }

  std::shared_ptr<MultimodalDataset> make_default(int n, DatasetOptions o = options()) const {
    return make(write_manifest(default_records(n)), std::move(o));
  }

  static std::shared_ptr<AugmentOptions> strong_augment() {
    auto a = std::make_shared<AugmentOptions>();
    a->enabled = true;
    a->crop_padding = 2;
    a->hflip = 0.5;
    a->brightness = 0.3;
    a->contrast = 0.3;
    return a;
  }

  TempDir dir_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  LabelMap labels_;
};

}  // namespace mmintent::test
