// The "audio" modality's reader through MultimodalDataset: paths resolved against the manifest,
// features collated with lengths and masks (a record without audio masked), cached and uncached
// reading alike, SpecAugment only with augmentation and the same for any batch order, and bad
// audio files an error naming the manifest line, or a skip.
#include "mmintent/data/audio_features.h"
#include "mmintent/data/dataset.h"
#include "mmintent/error.h"
#include "support/audio.h"
#include "support/support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace mmintent {
namespace {

class AudioReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_.path() / "clips");
    // 0.5 s at 440 Hz, 0.3 s at 880 Hz, 0.8 s at 1760 Hz (8 kHz files: resampled to 16 kHz).
    test::write_wav((dir_.path() / "clips/a.wav").string(), {test::sine(440, 8000, 4000)}, 8000);
    test::write_wav((dir_.path() / "clips/b.wav").string(), {test::sine(880, 8000, 2400)}, 8000);
    test::write_wav((dir_.path() / "clips/c.wav").string(), {test::sine(1760, 8000, 6400)}, 8000);
    labels_ = LabelMap::from_labels({"low", "mid", "high"});
  }

  std::unique_ptr<MultimodalDataset> make(const std::string& jsonl, bool cache = true,
                                          const std::string& on_bad = "error") {
    const auto path = dir_.write("train.jsonl", jsonl);
    ManifestReadOptions ro;
    ro.fields.text.clear();
    ro.fields.image.clear();
    ro.fields.plugins["audio"] = "audio";
    ro.path_inputs.insert("audio");
    ro.allow_missing_plugins.insert("audio");
    DatasetOptions o;
    o.modalities = {"audio"};
    o.audio.cache = cache;
    o.on_bad_sample = on_bad;
    return std::make_unique<MultimodalDataset>(read_manifest(path, ro), &labels_, nullptr, o);
  }

  test::TempDir dir_;
  LabelMap labels_;
};

const char* kManifest =
    "{\"audio\": \"clips/a.wav\", \"label\": \"low\"}\n"
    "{\"audio\": \"clips/b.wav\", \"label\": \"mid\"}\n"
    "{\"label\": \"mid\"}\n"
    "{\"audio\": \"clips/c.wav\", \"label\": \"high\"}\n";

TEST_F(AudioReaderTest, CollatesFeaturesWithLengthsAndMasks) {
  auto d = make(kManifest);
  ASSERT_EQ(d->size(), 4);
  EXPECT_TRUE(d->has("audio", 0));
  EXPECT_FALSE(d->has("audio", 2));
  const Batch b = d->collate({0, 1, 2, 3}, nullptr, 7);
  const auto& in = b.input("audio");
  // 16 kHz, hop 160: 1 + samples / 160 frames.
  const std::vector<int64_t> frames{1 + 8000 / 160, 1 + 4800 / 160, 0, 1 + 12800 / 160};
  EXPECT_EQ(in.data.sizes(), (std::vector<int64_t>{4, frames[3], 64}));
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(in.lengths[i].item<int64_t>(), frames[i]) << i;
  EXPECT_EQ(in.mask[2].item<float>(), 0.f);
  EXPECT_EQ(in.mask[0].item<float>(), 1.f);
  // Zero past each length; the missing sample all zeros.
  EXPECT_EQ(in.data[1].narrow(0, frames[1], frames[3] - frames[1]).abs().max().item<float>(), 0.f);
  EXPECT_EQ(in.data[2].abs().max().item<float>(), 0.f);
  // Normalised per utterance: each band of a real sample has mean ~0.
  EXPECT_LT(in.data[0].narrow(0, 0, frames[0]).mean(0).abs().max().item<float>(), 1e-4);
  // Uncached reading gives the same features (the cache keeps 16-bit samples: the files are
  // 16-bit, so only the resampler's rounding differs).
  auto uncached = make(kManifest, /*cache=*/false);
  const Batch ub = uncached->collate({0, 1, 2, 3}, nullptr, 7);
  const auto& u = ub.input("audio");
  EXPECT_LT((u.data - in.data).abs().max().item<float>(), 2e-2);
}

TEST_F(AudioReaderTest, SpecAugmentOnlyWhenTrainingAndTheSameInAnyBatch) {
  auto d = make(kManifest);
  AugmentOptions augment;
  augment.enabled = true;
  augment.spec_augment.freq_masks = 2;
  augment.spec_augment.freq_width = 20;
  const auto plain = d->collate({0, 3}, nullptr, 7).input("audio").data;
  const auto a = d->collate({0, 3}, &augment, 7).input("audio").data;
  const auto b = d->collate({3, 1, 0}, &augment, 7).input("audio").data;
  EXPECT_FALSE(at::equal(plain, a));
  // Sample 0 in another batch, another position: the same masks.
  EXPECT_TRUE(at::equal(a[0].narrow(0, 0, 51), b[2].narrow(0, 0, 51)));
  const auto other_epoch = d->collate({0, 3}, &augment, 8).input("audio").data;
  EXPECT_FALSE(at::equal(a, other_epoch));
}

TEST_F(AudioReaderTest, BadAudioIsAnErrorNamingTheManifestLineOrASkip) {
  dir_.write("clips/bad.wav", "RIFF but not really a wave file at all");
  const std::string manifest = std::string(kManifest) + "{\"audio\": \"clips/bad.wav\", \"label\": \"low\"}\n" +
                               "{\"audio\": \"clips/none.wav\", \"label\": \"low\"}\n";
  try {
    make(manifest);
    ADD_FAILURE() << "no error";
  } catch (const DataError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("train.jsonl:5"), std::string::npos) << what;
    EXPECT_NE(what.find("bad.wav"), std::string::npos) << what;
  }
  auto d = make(manifest, true, "skip");
  EXPECT_EQ(d->size(), 4);
  ASSERT_EQ(d->skipped().size(), 2u);
  EXPECT_NE(d->skipped()[1].find("audio file not found"), std::string::npos) << d->skipped()[1];
}

}  // namespace
}  // namespace mmintent
