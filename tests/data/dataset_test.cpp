// Tests of MultimodalDataset on tiny generated data sets (see data_fixture.h).

#include "mmintent/data/dataset.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "data/data_fixture.h"
#include "mmintent/error.h"
#include "support/support.h"

namespace mmintent {
namespace {

using test::expect_same_batch;
using test::grey_pattern;
using test::kLabels;
using test::kTexts;
using test::to_vector;
using DatasetTest = test::DataFixture;

TEST_F(DatasetTest, TokenisesTextsAndMapsLabels) {
  auto d = make_default(6);
  ASSERT_EQ(d->size(), 6);
  EXPECT_TRUE(d->has_labels());
  EXPECT_TRUE(d->skipped().empty());
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ(d->token_ids(i), tokenizer_->encode(kTexts[i])) << i;
    EXPECT_EQ(d->label(i), labels_.find(kLabels[i % 3])) << i;
    EXPECT_TRUE(d->has_text(i));
    EXPECT_TRUE(d->has_image(i));
    EXPECT_EQ(d->record(i).line, i + 1);
  }
  EXPECT_EQ(d->label_counts(3), (std::vector<int64_t>{2, 2, 2}));
}

TEST_F(DatasetTest, CollateShapesPaddingLengthsImagesLabelsAndIndices) {
  auto d = make_default(6);
  const std::vector<int64_t> idx{2, 0, 5, 4};
  const Batch b = d->collate(idx, nullptr, 7);

  int64_t longest = 0;
  for (auto i : idx)
    longest = std::max<int64_t>(longest, static_cast<int64_t>(d->token_ids(i).size()));
  ASSERT_GT(longest, 0);
  ASSERT_TRUE(b.input("text").data.defined());
  EXPECT_EQ(b.input("text").data.scalar_type(), at::kLong);
  EXPECT_EQ(b.input("text").data.sizes(), (std::vector<int64_t>{4, longest}));
  EXPECT_EQ(b.input("text").lengths.sizes(), (std::vector<int64_t>{4}));
  EXPECT_EQ(b.input("text").mask.scalar_type(), at::kFloat);
  EXPECT_EQ(b.input("image").data.sizes(), (std::vector<int64_t>{4, 1, 8, 8}));
  EXPECT_EQ(b.input("image").data.scalar_type(), at::kFloat);
  EXPECT_EQ(b.input("image").mask.sizes(), (std::vector<int64_t>{4}));
  EXPECT_EQ(b.size(), 4);
  EXPECT_EQ(to_vector(b.indices), idx);

  for (int64_t r = 0; r < 4; ++r) {
    const auto& ids = d->token_ids(idx[r]);
    const auto n = static_cast<int64_t>(ids.size());
    EXPECT_EQ(b.input("text").lengths[r].item<int64_t>(), n);
    EXPECT_EQ(b.input("text").mask[r].item<float>(), 1.f);
    EXPECT_EQ(b.input("image").mask[r].item<float>(), 1.f);
    EXPECT_EQ(b.labels[r].item<int64_t>(), d->label(idx[r]));
    const auto row = to_vector(b.input("text").data[r]);
    for (int64_t t = 0; t < longest; ++t) {
      EXPECT_EQ(row[t], t < n ? ids[t] : 0) << "row " << r << " position " << t;
    }
    // The image is the normalised PNG: (x/255 - 0.5) / 0.5.
    const cv::Mat m = grey_pattern(static_cast<int>(idx[r]));
    for (int y = 0; y < 8; ++y) {
      for (int x = 0; x < 8; ++x) {
        const float want = (m.at<uint8_t>(y, x) / 255.f - 0.5f) / 0.5f;
        EXPECT_NEAR(b.input("image").data[r][0][y][x].item<float>(), want, 1e-5) << r << " " << y << " " << x;
      }
    }
  }
}

TEST_F(DatasetTest, ColourImagesAreRgbChannelsFirst) {
  // OpenCV writes BGR: B=10, G=100, R=200; the model sees RGB order.
  cv::Mat colour(8, 8, CV_8UC3, cv::Scalar(10, 100, 200));
  ASSERT_TRUE(cv::imwrite((dir_.path() / "colour.png").string(), colour));
  auto records = default_records(2);
  records[1]["image"] = "colour.png";
  auto o = options();
  o.image.channels = 3;
  o.image.mean = {0.0};
  o.image.std = {1.0};
  auto d = make(write_manifest(records), o);
  const Batch b = d->collate({0, 1}, nullptr, 0);
  EXPECT_EQ(b.input("image").data.sizes(), (std::vector<int64_t>{2, 3, 8, 8}));
  EXPECT_NEAR(b.input("image").data[1][0].mean().item<float>(), 200 / 255.f, 1e-5);
  EXPECT_NEAR(b.input("image").data[1][1].mean().item<float>(), 100 / 255.f, 1e-5);
  EXPECT_NEAR(b.input("image").data[1][2].mean().item<float>(), 10 / 255.f, 1e-5);
  // A grey file converted to 3 channels has three equal planes.
  EXPECT_TRUE(at::allclose(b.input("image").data[0][0], b.input("image").data[0][1]));
  EXPECT_TRUE(at::allclose(b.input("image").data[0][0], b.input("image").data[0][2]));
}

TEST_F(DatasetTest, SampleWithoutImageGetsZeroSlotAndMask) {
  auto records = default_records(3);
  records[1].erase("image");
  records[2]["image"] = nullptr;
  auto d = make(write_manifest(records), options(), false, /*allow_missing_image=*/true);
  ASSERT_EQ(d->size(), 3);
  EXPECT_TRUE(d->has_image(0));
  EXPECT_FALSE(d->has_image(1));
  EXPECT_FALSE(d->has_image(2));
  const Batch b = d->collate({1, 0, 2}, strong_augment().get(), 3);
  EXPECT_EQ(b.input("image").mask[0].item<float>(), 0.f);
  EXPECT_EQ(b.input("image").mask[1].item<float>(), 1.f);
  EXPECT_EQ(b.input("image").mask[2].item<float>(), 0.f);
  EXPECT_EQ(b.input("image").data[0].abs().sum().item<float>(), 0.f);
  EXPECT_EQ(b.input("image").data[2].abs().sum().item<float>(), 0.f);
  EXPECT_GT(b.input("image").data[1].abs().sum().item<float>(), 0.f);
  // The text of an image-less sample is unaffected.
  EXPECT_EQ(b.input("text").mask[0].item<float>(), 1.f);
}

TEST_F(DatasetTest, EmptyTextGetsLengthZeroAndMask) {
  auto records = default_records(3);
  records[0]["text"] = "";
  records[2]["text"] = "   ";
  auto d = make(write_manifest(records), options(), /*allow_missing_text=*/true);
  EXPECT_FALSE(d->has_text(0));
  EXPECT_TRUE(d->has_text(1));
  EXPECT_FALSE(d->has_text(2));
  const Batch b = d->collate({0, 1, 2}, nullptr, 0);
  const auto n1 = static_cast<int64_t>(d->token_ids(1).size());
  EXPECT_EQ(b.input("text").data.size(1), n1);
  EXPECT_EQ(to_vector(b.input("text").lengths), (std::vector<int64_t>{0, n1, 0}));
  EXPECT_EQ(b.input("text").mask[0].item<float>(), 0.f);
  EXPECT_EQ(b.input("text").mask[1].item<float>(), 1.f);
  EXPECT_EQ(b.input("text").mask[2].item<float>(), 0.f);
  EXPECT_EQ(b.input("text").data[0].abs().sum().item<int64_t>(), 0);
  EXPECT_EQ(b.input("text").data[2].abs().sum().item<int64_t>(), 0);

  // A batch of empty texts only: all padding, lengths 0.
  const Batch e = d->collate({0, 2}, nullptr, 0);
  EXPECT_EQ(e.input("text").data.size(0), 2);
  EXPECT_EQ(e.input("text").data.abs().sum().item<int64_t>(), 0);
  EXPECT_EQ(to_vector(e.input("text").lengths), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(e.input("text").mask.sum().item<float>(), 0.f);
}

TEST_F(DatasetTest, MaxLengthTruncatesTokens) {
  auto o = options();
  o.max_length = 3;
  auto d = make_default(10, o);
  const auto full = tokenizer_->encode(kTexts[9]);
  ASSERT_GT(full.size(), 3u) << "the long text must encode to more than 3 tokens";
  EXPECT_EQ(d->token_ids(9), std::vector<int64_t>(full.begin(), full.begin() + 3));
  std::vector<int64_t> all(10);
  std::iota(all.begin(), all.end(), 0);
  const Batch b = d->collate(all, nullptr, 0);
  EXPECT_EQ(b.input("text").data.size(1), 3);
  EXPECT_LE(b.input("text").lengths.max().item<int64_t>(), 3);
  EXPECT_EQ(b.input("text").lengths[9].item<int64_t>(), 3);
}

TEST_F(DatasetTest, UnknownLabelIsDataErrorNamingFileAndLine) {
  auto records = default_records(5);
  records[2]["label"] = "delta";
  const auto path = write_manifest(records);
  try {
    make(path, options());
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.line(), 3);
    const std::string what = e.what();
    EXPECT_NE(what.find(path + ":3"), std::string::npos) << what;
    EXPECT_NE(what.find("delta"), std::string::npos) << what;
  }
}

TEST_F(DatasetTest, UnknownLabelSkippedWhenAskedAndListed) {
  auto records = default_records(5);
  records[2]["label"] = "delta";
  const auto path = write_manifest(records);
  auto o = options();
  o.unknown_labels = "skip";
  auto d = make(path, o);
  ASSERT_EQ(d->size(), 4);
  ASSERT_EQ(d->skipped().size(), 1u);
  EXPECT_NE(d->skipped()[0].find(path + ":3"), std::string::npos) << d->skipped()[0];
  EXPECT_NE(d->skipped()[0].find("delta"), std::string::npos) << d->skipped()[0];
  // The remaining samples keep their own text, label and line.
  const std::vector<long> lines{1, 2, 4, 5};
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(d->record(i).line, lines[i]);
    EXPECT_EQ(d->label(i), labels_.find(kLabels[(lines[i] - 1) % 3]));
    EXPECT_EQ(d->token_ids(i), tokenizer_->encode(kTexts[lines[i] - 1]));
  }
  const Batch b = d->collate({2}, nullptr, 0);
  EXPECT_EQ(b.labels[0].item<int64_t>(), labels_.find(kLabels[3 % 3]));
}

TEST_F(DatasetTest, CorruptImageIsErrorOrSkippedWithCache) {
  auto records = default_records(5);
  dir_.write("broken.png", "this is not a png file at all");
  records[3]["image"] = "broken.png";
  const auto path = write_manifest(records);

  auto o = options();
  o.cache_images = true;
  try {
    make(path, o);
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.line(), 4);
    const std::string what = e.what();
    EXPECT_NE(what.find(path + ":4"), std::string::npos) << what;
    EXPECT_NE(what.find("broken.png"), std::string::npos) << what;
  }

  o.on_bad_sample = "skip";
  o.threads = 2;
  auto d = make(path, o);
  ASSERT_EQ(d->size(), 4);
  ASSERT_EQ(d->skipped().size(), 1u);
  EXPECT_NE(d->skipped()[0].find(path + ":4"), std::string::npos) << d->skipped()[0];
  // Regression test: the compaction of kept samples in MultimodalDataset once self-moved
  // (`records_[w] = std::move(records_[i])` with w == i), which empties strings and vectors in
  // libstdc++: every sample before the first skipped one lost its text, image path and pixels.
  const std::vector<long> lines{1, 2, 3, 5};
  for (int64_t i = 0; i < 4; ++i) {
    SCOPED_TRACE("kept sample " + std::to_string(i));
    EXPECT_EQ(d->record(i).line, lines[i]);
    EXPECT_EQ(d->record(i).text, kTexts[lines[i] - 1]);
    EXPECT_EQ(d->label(i), labels_.find(kLabels[(lines[i] - 1) % 3]));
    EXPECT_EQ(d->token_ids(i), tokenizer_->encode(kTexts[lines[i] - 1]));
    EXPECT_TRUE(d->has_image(i));
    // Each kept sample still has its own image (sample at manifest line L: img_<L-1>.png).
    const Batch b = d->collate({i}, nullptr, 0);
    EXPECT_EQ(b.input("image").mask[0].item<float>(), 1.f);
    const cv::Mat m = grey_pattern(static_cast<int>(lines[i] - 1));
    EXPECT_NEAR(b.input("image").data[0][0][0][0].item<float>(), (m.at<uint8_t>(0, 0) / 255.f - 0.5f) / 0.5f,
                1e-5);
    EXPECT_NEAR(b.input("image").data[0][0][7][5].item<float>(), (m.at<uint8_t>(7, 5) / 255.f - 0.5f) / 0.5f,
                1e-5);
  }
}

TEST_F(DatasetTest, CacheOffGivesTheSameBatchesAsCacheOn) {
  const auto path = write_manifest(default_records(9));
  auto on = options();
  on.cache_images = true;
  on.threads = 2;
  auto off = options();
  off.cache_images = false;
  auto a = make(path, on);
  auto b = make(path, off);
  const auto augment = strong_augment();
  for (const std::vector<int64_t>& idx : {std::vector<int64_t>{0, 1, 2}, {8, 3, 5, 7}, {4}}) {
    expect_same_batch(a->collate(idx, nullptr, 11), b->collate(idx, nullptr, 11), "plain");
    expect_same_batch(a->collate(idx, augment.get(), 11), b->collate(idx, augment.get(), 11),
                      "augmented");
  }
}

TEST_F(DatasetTest, AugmentationDependsOnSeedAndSampleNotOnBatch) {
  auto d = make_default(6);
  const auto augment = strong_augment();
  const Batch a = d->collate({1, 2, 3}, augment.get(), 5);
  const Batch again = d->collate({1, 2, 3}, augment.get(), 5);
  expect_same_batch(a, again, "same seed");
  // Sample 2 alone, or in another position, is augmented identically.
  const Batch alone = d->collate({2}, augment.get(), 5);
  EXPECT_TRUE(at::equal(a.input("image").data[1], alone.input("image").data[0]));
  const Batch other = d->collate({4, 3, 2}, augment.get(), 5);
  EXPECT_TRUE(at::equal(a.input("image").data[1], other.input("image").data[2]));
  // Another seed gives other images; no augmentation gives the plain image.
  const Batch reseeded = d->collate({1, 2, 3}, augment.get(), 6);
  EXPECT_FALSE(at::equal(a.input("image").data, reseeded.input("image").data));
  AugmentOptions disabled = *augment;
  disabled.enabled = false;
  expect_same_batch(d->collate({1, 2, 3}, &disabled, 5), d->collate({1, 2, 3}, nullptr, 5),
                    "disabled");
}

TEST_F(DatasetTest, UnusedModalitiesAndUnlabeledData) {
  const auto path = write_manifest(default_records(4));
  auto text_only = options();
  text_only.modalities = {"text"};
  auto t = make(path, text_only);
  const Batch bt = t->collate({0, 1}, nullptr, 0);
  EXPECT_TRUE(bt.input("text").data.defined());
  EXPECT_EQ(bt.find("image"), nullptr);
  EXPECT_EQ(bt.inputs.size(), 1u);
  EXPECT_FALSE(t->has_image(0));

  auto image_only = options();
  image_only.modalities = {"image"};
  auto i = std::make_shared<MultimodalDataset>(read(path), &labels_, nullptr, image_only);
  const Batch bi = i->collate({0, 1}, nullptr, 0);
  EXPECT_EQ(bi.find("text"), nullptr);
  EXPECT_THROW(bi.input("text"), std::invalid_argument);
  EXPECT_TRUE(bi.input("image").data.defined());

  // Text used but no tokenizer: an Error, not a crash.
  EXPECT_THROW(MultimodalDataset(read(path), &labels_, nullptr, options()), Error);

  // No label map: unlabeled data, labels undefined in batches, size() from indices.
  auto u = std::make_shared<MultimodalDataset>(read(path), nullptr, tokenizer_, options());
  EXPECT_FALSE(u->has_labels());
  EXPECT_EQ(u->label(0), -1);
  const Batch bu = u->collate({3, 1}, nullptr, 0);
  EXPECT_FALSE(bu.labels.defined());
  EXPECT_EQ(bu.size(), 2);
}


}  // namespace
}  // namespace mmintent
