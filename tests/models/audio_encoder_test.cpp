// The audio encoder: shapes, the front end's frame count, an utterance's encoding independent of
// its batch's padding (fused and native RNN kernels alike), and the classifier fusing audio with
// a missing-audio sample masked.
#include "mmintent/models/audio_encoder.h"
#include "mmintent/models/intent_classifier.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace mmintent {
namespace {

using AudioEncoderTest = test::SeededTest;

TEST_F(AudioEncoderTest, SubsamplesFramesAsTheConvolutionsDo) {
  EXPECT_EQ(AudioEncoderImpl::subsampled(0), 0);
  EXPECT_EQ(AudioEncoderImpl::subsampled(1), 1);
  EXPECT_EQ(AudioEncoderImpl::subsampled(4), 1);
  EXPECT_EQ(AudioEncoderImpl::subsampled(5), 2);
  EXPECT_EQ(AudioEncoderImpl::subsampled(51), 13);
  // The convolutions agree.
  AudioEncoder enc(AudioEncoderOptions().n_mels(16).channels(4).hidden_size(8).num_layers(1));
  for (int64_t t : {1, 4, 5, 51, 100}) {
    auto x = torch::randn({1, 1, t, 16});
    auto conv1 = enc->named_children()["conv1"]->as<torch::nn::Conv2d>();
    auto conv2 = enc->named_children()["conv2"]->as<torch::nn::Conv2d>();
    EXPECT_EQ(conv2->forward(conv1->forward(x)).size(2), AudioEncoderImpl::subsampled(t)) << t;
  }
}

TEST_F(AudioEncoderTest, AnUtterancesEncodingDoesNotDependOnItsBatchsPadding) {
  for (const std::string kernel : {"fused", "native"}) {
    for (const std::string pooling : {"mean", "max", "last"}) {
      AudioEncoder enc(AudioEncoderOptions().n_mels(16).channels(4).hidden_size(8).num_layers(2)
                           .pooling(pooling).rnn_kernel(kernel));
      enc->eval();
      EXPECT_EQ(enc->output_dim(), 16);
      auto a = torch::randn({1, 37, 16});
      auto alone = enc->forward(a, torch::tensor({37}, torch::kLong));
      // The same utterance in a batch padded (with zeros) to 90 frames, beside a longer one.
      auto batch = torch::zeros({2, 90, 16});
      batch[0].narrow(0, 0, 37).copy_(a[0]);
      batch[1].copy_(torch::randn({90, 16}));
      auto both = enc->forward(batch, torch::tensor({37, 90}, torch::kLong));
      ASSERT_EQ(both.sizes(), (std::vector<int64_t>{2, 16}));
      EXPECT_TRUE(torch::allclose(both[0], alone[0], 1e-4, 1e-5)) << kernel << " " << pooling;
    }
  }
}

TEST_F(AudioEncoderTest, GlobalNormalisationUsesItsBuffersAndKeepsPaddingOutOfTheEncoding) {
  const auto options = AudioEncoderOptions().n_mels(16).channels(4).hidden_size(8).num_layers(1).pooling("mean");
  AudioEncoder plain(options);
  AudioEncoder normed(AudioEncoderOptions(options).global_norm(true));
  EXPECT_THROW(plain->set_feature_stats(torch::zeros({16}), torch::ones({16})), std::invalid_argument);
  EXPECT_THROW(normed->set_feature_stats(torch::zeros({15}), torch::ones({16})), std::invalid_argument);
  // Same weights; the buffers are named as checkpoints and exports know them.
  {
    torch::NoGradGuard no_grad;
    auto src = plain->named_parameters();
    for (auto& p : normed->named_parameters()) p.value().copy_(src[p.key()]);
  }
  auto buffers = normed->named_buffers();
  ASSERT_TRUE(buffers.contains("feature_mean"));
  ASSERT_TRUE(buffers.contains("feature_std"));
  EXPECT_TRUE(plain->named_buffers().is_empty());
  const auto mean = torch::randn({16}) * 5 - 10;
  const auto deviation = torch::rand({16}) + 0.5;
  normed->set_feature_stats(mean, deviation);
  EXPECT_TRUE(torch::equal(buffers["feature_mean"], mean));
  plain->eval();
  normed->eval();
  // Raw features in; the same as normalising them by hand (padding zero) for the plain encoder.
  auto raw = torch::randn({2, 30, 16}) * 3 - 10;
  const auto lengths = torch::tensor({30, 17}, torch::kLong);
  raw[1].narrow(0, 17, 13).zero_();
  auto by_hand = (raw - mean) / deviation;
  by_hand[1].narrow(0, 17, 13).zero_();
  EXPECT_TRUE(torch::allclose(normed->forward(raw, lengths), plain->forward(by_hand, lengths), 1e-4, 1e-5));
  // Padded further, sample 1 encodes the same.
  auto longer = torch::zeros({2, 60, 16});
  longer.narrow(1, 0, 30).copy_(raw);
  EXPECT_TRUE(torch::allclose(normed->forward(longer, lengths)[1], normed->forward(raw, lengths)[1], 1e-4, 1e-5));
  // A deviation of zero does not divide by zero.
  normed->set_feature_stats(mean, torch::zeros({16}));
  EXPECT_TRUE(torch::isfinite(normed->forward(raw, lengths)).all().item<bool>());
}

TEST_F(AudioEncoderTest, TheClassifierFusesAudioAndMasksMissingAudio) {
  auto options = IntentClassifierOptions().num_classes(3).modalities({"audio", "text"});
  options.text(TextEncoderOptions().vocab_size(10).embedding_dim(4).hidden_size(4));
  options.audio(AudioEncoderOptions().n_mels(8).channels(2).hidden_size(4).num_layers(1));
  IntentClassifier model(options);
  model->eval();
  EXPECT_EQ(model->modalities(), (std::vector<std::string>{"text", "audio"}));
  bool found = false;
  for (const auto& p : model->named_parameters()) found |= p.key() == "audio_encoder.rnn.weight_ih_l0";
  EXPECT_TRUE(found);
  Batch b;
  b.inputs["text"] = {torch::tensor({{1, 2, 0}, {3, 0, 0}}, torch::kLong), torch::tensor({2, 1}, torch::kLong),
                      torch::ones({2})};
  b.inputs["audio"] = {torch::randn({2, 20, 8}), torch::tensor({20, 0}, torch::kLong), torch::tensor({1.f, 0.f})};
  b.indices = torch::arange(2);
  const auto logits = model->forward(b);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 3}));
  // Sample 1 lacks audio: whatever its features hold, its logits stay the same.
  auto changed = b;
  changed.inputs["audio"].data = b.inputs["audio"].data.clone();
  changed.inputs["audio"].data[1].fill_(5.f);
  EXPECT_TRUE(torch::allclose(model->forward(changed)[1], logits[1]));
  // Sample 0 has audio: changing it changes its logits.
  changed.inputs["audio"].data[0].fill_(5.f);
  EXPECT_FALSE(torch::allclose(model->forward(changed)[0], logits[0]));
}

}  // namespace
}  // namespace mmintent
