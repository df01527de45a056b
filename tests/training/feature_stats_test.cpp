// Global feature statistics: per-band mean and deviation over the real frames only (padding and
// samples without the modality left out), against a direct computation; fitted into an audio
// encoder with global normalisation and not touched without it.
#include "mmintent/training/feature_stats.h"
#include "mmintent/models/audio_encoder.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace mmintent {
namespace {

using FeatureStatsTest = test::SeededTest;

/// Serves fixed batches, in order, every pass.
class FixedSource : public BatchSource {
 public:
  explicit FixedSource(std::vector<Batch> batches) : batches_(std::move(batches)) {}
  void start_epoch(int64_t) override { next_ = 0; }
  std::optional<Batch> next() override {
    if (next_ >= batches_.size()) return std::nullopt;
    return batches_[next_++];
  }
  int64_t num_batches() const override { return static_cast<int64_t>(batches_.size()); }
  int64_t num_samples() const override {
    int64_t n = 0;
    for (const auto& b : batches_) n += b.size();
    return n;
  }
  int64_t batch_size_at(int64_t i) const override { return batches_.at(i).size(); }
  int64_t global_batch_size_at(int64_t i) const override { return batch_size_at(i); }

 private:
  std::vector<Batch> batches_;
  size_t next_ = 0;
};

/// A batch of B audio samples of the given lengths: real frames random around (-8, 3), padding
/// holding 1000 (that must never be counted).
Batch audio_batch(const std::vector<int64_t>& lengths, int64_t mels, std::vector<at::Tensor>& real) {
  const auto B = static_cast<int64_t>(lengths.size());
  const int64_t T = *std::max_element(lengths.begin(), lengths.end());
  auto data = torch::full({B, std::max<int64_t>(T, 1), mels}, 1000.f);
  for (int64_t b = 0; b < B; ++b) {
    if (lengths[b] == 0) continue;
    auto frames = torch::randn({lengths[b], mels}) * 3 - 8 + torch::arange(mels).to(torch::kFloat);
    data[b].narrow(0, 0, lengths[b]).copy_(frames);
    real.push_back(frames);
  }
  Batch batch;
  batch.inputs["audio"] = {data, torch::tensor(lengths, torch::kLong), (torch::tensor(lengths) > 0).to(torch::kFloat)};
  batch.labels = torch::zeros({B}, torch::kLong);
  batch.indices = torch::arange(B);
  return batch;
}

TEST_F(FeatureStatsTest, MeanAndDeviationOverRealFramesOnly) {
  std::vector<at::Tensor> real;
  FixedSource source({audio_batch({7, 3, 0}, 6, real), audio_batch({12}, 6, real), audio_batch({1, 5}, 6, real)});
  const auto stats = sequence_feature_stats(source);
  EXPECT_EQ(stats.samples, 5);
  EXPECT_EQ(stats.frames, 7 + 3 + 12 + 1 + 5);
  const auto all = torch::cat(real).to(torch::kDouble);
  EXPECT_TRUE(torch::allclose(stats.mean.to(torch::kDouble), all.mean(0), 1e-5, 1e-5)) << stats.mean;
  EXPECT_TRUE(torch::allclose(stats.std.to(torch::kDouble), all.std(0, /*unbiased=*/false), 1e-5, 1e-5)) << stats.std;
}

TEST_F(FeatureStatsTest, RefusesASourceWithoutTheModality) {
  std::vector<at::Tensor> real;
  FixedSource none({audio_batch({0, 0}, 4, real)});
  EXPECT_THROW(sequence_feature_stats(none), std::invalid_argument);
  FixedSource other({audio_batch({3}, 4, real)});
  EXPECT_THROW(sequence_feature_stats(other, "speech"), std::invalid_argument);
}

TEST_F(FeatureStatsTest, FitsThemIntoAGloballyNormalisedAudioEncoderOnly) {
  std::vector<at::Tensor> real;
  FixedSource source({audio_batch({9, 4}, 8, real)});
  auto options = IntentClassifierOptions().num_classes(3).modalities({"audio"});
  options.audio(AudioEncoderOptions().n_mels(8).channels(2).hidden_size(4).num_layers(1));
  IntentClassifier plain(options);
  EXPECT_FALSE(fit_feature_stats(plain, source).has_value());
  options.audio(AudioEncoderOptions(options.audio()).global_norm(true));
  IntentClassifier normed(options);
  const auto stats = fit_feature_stats(normed, source);
  ASSERT_TRUE(stats.has_value());
  auto buffers = normed->named_buffers();
  EXPECT_TRUE(torch::equal(buffers["audio_encoder.feature_mean"], stats->mean));
  EXPECT_TRUE(torch::allclose(buffers["audio_encoder.feature_std"], stats->std));
  EXPECT_LT(stats->mean[0].item<float>(), -4.f);  // not the initial zeros
}

}  // namespace
}  // namespace mmintent
