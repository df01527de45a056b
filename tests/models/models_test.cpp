#include "mmintent/models/intent_classifier.h"
#include "support/support.h"
#include "support/synthetic.h"

#include <torch/torch.h>

using namespace mmintent;

namespace {

class ModelsTest : public test::SeededTest {};

IntentClassifierOptions small_options(bool text, bool image, const std::string& fusion = "concat") {
  IntentClassifierOptions o;
  std::vector<std::string> modalities;
  if (text) modalities.push_back("text");
  if (image) modalities.push_back("image");
  o.num_classes(8).modalities(modalities);
  o.text(TextEncoderOptions().vocab_size(30).embedding_dim(8).hidden_size(12));
  o.image(ImageEncoderOptions().channels({4, 8}).out_dim(10));
  o.fusion(FusionOptions().type(fusion).dim(16));
  o.head(HeadOptions().hidden({16}).dropout(0.0));
  return o;
}

TEST_F(ModelsTest, OutputShapesForEachModalitySetting) {
  test::SyntheticSource src(6, 6, 1, false);
  const auto batch = src.all();
  for (auto [text, image] : {std::pair{true, true}, {true, false}, {false, true}}) {
    for (const std::string fusion : {"concat", "gated"}) {
      IntentClassifier model(small_options(text, image, fusion));
      auto logits = model->forward(batch);
      EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{6, 8}));
      auto probs = model->predict_proba(batch);
      EXPECT_TRUE(torch::allclose(probs.sum(1), torch::ones({6}), 1e-5, 1e-5));
    }
  }
}

TEST_F(ModelsTest, ForwardWithFeaturesGivesTheLogitsAndWhatTheLastLayerReads) {
  test::SyntheticSource src(6, 6, 1, false);
  const auto batch = src.all();
  for (const std::vector<int64_t>& hidden : {std::vector<int64_t>{16}, std::vector<int64_t>{}}) {
    auto o = small_options(true, true);
    o.head(HeadOptions().hidden(hidden).dropout(0.2));
    IntentClassifier model(o);
    model->eval();
    const auto [logits, features] = model->forward_with_features(batch);
    EXPECT_TRUE(torch::allclose(logits, model->forward(batch), 1e-6, 1e-6));
    // With a hidden layer: its (ReLU) output, 16 wide; without: the fused features.
    if (hidden.empty()) {
      EXPECT_TRUE(torch::allclose(features, model->fuse(batch), 1e-6, 1e-6));
    } else {
      EXPECT_EQ(features.sizes(), (std::vector<int64_t>{6, 16}));
      EXPECT_GE(features.min().item<float>(), 0.0f);
    }
  }
}

TEST_F(ModelsTest, AnEnsembleAveragesItsMembersCalibratedProbabilities) {
  test::SyntheticSource src(6, 6, 1, false);
  const auto batch = src.all();
  auto gru = small_options(true, true, "gated");
  gru.text(TextEncoderOptions().type("gru").vocab_size(30).embedding_dim(8).hidden_size(12));
  IntentClassifier a(small_options(true, true)), b(gru);
  a->eval();
  b->eval();
  IntentClassifier ensemble(std::make_shared<IntentClassifierImpl>(
      std::vector<std::shared_ptr<IntentClassifierImpl>>{a.ptr(), b.ptr()}, std::vector<double>{1.0, 2.5}));
  ensemble->eval();
  torch::NoGradGuard no_grad;
  // By hand: each member's softmax at its temperature, averaged; forward() is its log.
  const auto expected = (torch::softmax(a->forward(batch), 1) + torch::softmax(b->forward(batch) / 2.5, 1)) / 2;
  const auto logits = ensemble->forward(batch);
  EXPECT_TRUE(torch::allclose(logits.exp(), expected, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(ensemble->predict_proba(batch), expected, 1e-6, 1e-6));
  // Features: the members' side by side (16 + 16 from their heads' hidden layers).
  const auto [l, features] = ensemble->forward_with_features(batch);
  EXPECT_TRUE(torch::allclose(l, logits, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(features, torch::cat({a->forward_with_features(batch).second,
                                                    b->forward_with_features(batch).second}, 1), 1e-6, 1e-6));
  EXPECT_EQ(ensemble->fuse(batch).size(1), a->fuse(batch).size(1) + b->fuse(batch).size(1));
  // The members are its submodules: their parameters are its parameters.
  EXPECT_EQ(ensemble->parameters().size(), a->parameters().size() + b->parameters().size());
  EXPECT_EQ(ensemble->modalities(), a->modalities());
  EXPECT_EQ(ensemble->encoder("text"), nullptr);
  // Refused: no member, a temperature <= 0, members of different class counts, an adapter.
  using Members = std::vector<std::shared_ptr<IntentClassifierImpl>>;
  EXPECT_THROW(IntentClassifierImpl(Members{}, {}), c10::Error);
  EXPECT_THROW(IntentClassifierImpl(Members{a.ptr()}, {0.0}), c10::Error);
  auto fewer = small_options(true, true);
  fewer.num_classes(5);
  EXPECT_THROW(IntentClassifierImpl(Members{a.ptr(), IntentClassifier(fewer).ptr()}, {1.0, 1.0}), c10::Error);
  EXPECT_THROW(ensemble->attach_adapter(LowRankAdapter(*a, LowRankOptions())), c10::Error);
}

TEST_F(ModelsTest, ImageEncoderShape) {
  ImageEncoder enc(ImageEncoderOptions().in_channels(3).channels({4, 8, 8}).convs_per_block(2).out_dim(5));
  EXPECT_EQ(enc->forward(torch::randn({2, 3, 32, 24})).sizes(), (std::vector<int64_t>{2, 5}));
  EXPECT_THROW(enc->forward(torch::randn({2, 1, 32, 32})), c10::Error);
}

TEST_F(ModelsTest, PaddingNeverChangesTheTextEncoding) {
  for (const std::string type : {"lstm", "gru"}) {
    for (const std::string pooling : {"last", "mean", "max"}) {
      for (bool bidirectional : {false, true}) {
        TextEncoder enc(TextEncoderOptions()
                            .vocab_size(30)
                            .embedding_dim(6)
                            .hidden_size(5)
                            .num_layers(2)
                            .type(type)
                            .pooling(pooling)
                            .bidirectional(bidirectional));
        enc->eval();
        auto ids = torch::tensor({{3L, 7L, 9L, 0L}, {4L, 5L, 6L, 8L}});
        auto lengths = torch::tensor({3L, 4L});
        auto padded = torch::cat({ids, torch::zeros({2, 5}, torch::kLong)}, 1);  // 5 more pads
        auto a = enc->forward(ids, lengths);
        auto b = enc->forward(padded, lengths);
        auto alone = enc->forward(ids.slice(0, 0, 1).slice(1, 0, 3), torch::tensor({3L}));
        EXPECT_TRUE(torch::allclose(a, b, 1e-6, 1e-6)) << type << " " << pooling;
        EXPECT_TRUE(torch::allclose(a[0], alone[0], 1e-6, 1e-6)) << type << " " << pooling;
        EXPECT_EQ(a.size(1), enc->output_dim());
      }
    }
  }
}

TEST_F(ModelsTest, MissingModalityIsMaskedNotRead) {
  for (const std::string fusion : {"concat", "gated"}) {
    IntentClassifier model(small_options(true, true, fusion));
    model->eval();
    test::SyntheticSource src(4, 4, 3, false);
    auto batch = src.all();
    batch.inputs["image"].mask = torch::tensor({1.f, 0.f, 1.f, 0.f});
    batch.inputs["text"].mask = torch::tensor({1.f, 1.f, 0.f, 1.f});
    auto before = model->forward(batch);
    auto scrambled = batch;
    scrambled.inputs["image"].data = torch::randn_like(batch.input("image").data) * 10;
    scrambled.inputs["text"].data = (batch.input("text").data * 3) % 29;
    auto after = model->forward(scrambled);
    // Sample 1 has no image, sample 2 no text: their logits ignore that modality's content.
    // (Sample 1's text and sample 2's image changed too, so compare with only the masked part changed.)
    auto only_image = batch;
    only_image.inputs["image"].data = scrambled.input("image").data;
    auto with_new_images = model->forward(only_image);
    EXPECT_TRUE(torch::allclose(before[1], with_new_images[1], 1e-5, 1e-5)) << fusion;
    EXPECT_TRUE(torch::allclose(before[3], with_new_images[3], 1e-5, 1e-5)) << fusion;
    EXPECT_FALSE(torch::allclose(before[0], with_new_images[0], 1e-5, 1e-5)) << fusion;
    auto only_text = batch;
    only_text.inputs["text"].data = scrambled.input("text").data;
    auto with_new_text = model->forward(only_text);
    EXPECT_TRUE(torch::allclose(before[2], with_new_text[2], 1e-5, 1e-5)) << fusion;
    (void)after;
  }
}

TEST_F(ModelsTest, TinyModelOverfitsATinyBatch) {
  IntentClassifier model(small_options(true, true));
  test::SyntheticSource src(16, 16, 5, false);
  auto batch = src.all();
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(0.02));
  float loss_value = 0;
  for (int step = 0; step < 150; ++step) {
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(batch), batch.labels);
    loss.backward();
    opt.step();
    loss_value = loss.item<float>();
  }
  EXPECT_LT(loss_value, 0.05f);
  auto pred = model->predict_proba(batch).argmax(1);
  EXPECT_TRUE(pred.equal(batch.labels));
}

TEST_F(ModelsTest, InvalidOptionsAreRejected) {
  auto o = small_options(false, false);
  EXPECT_THROW(IntentClassifier{o}, c10::Error);
  EXPECT_THROW(TextEncoder(TextEncoderOptions().vocab_size(10).type("rnn")), c10::Error);
  EXPECT_THROW(ImageEncoder(ImageEncoderOptions().kernel_size(4)), c10::Error);
}

}  // namespace
