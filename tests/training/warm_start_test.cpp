// model.init's warm start: the parts named are copied from a checkpoint whatever else differs
// (here the head: other intents), the rest stays as initialised; a part the model lacks, a
// tensor the file lacks or shapes differently is an error naming it; without parts, every
// tensor whose name and shape match is copied and the others are listed.
#include "mmintent/error.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/checkpoint.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace mmintent {
namespace {

class WarmStartTest : public test::SeededTest {
 protected:
  static IntentClassifierOptions options(int64_t classes, int64_t audio_hidden) {
    auto o = IntentClassifierOptions().num_classes(classes).modalities({"audio", "text"});
    o.text(TextEncoderOptions().vocab_size(20).embedding_dim(4).hidden_size(6));
    o.audio(AudioEncoderOptions().n_mels(8).channels(2).hidden_size(audio_hidden).num_layers(1).global_norm(true));
    return o;
  }
  /// A model of 7 intents, its weights saved as a run's model.pt is.
  std::string saved(IntentClassifier& source) {
    const auto path = (dir_.path() / "model.pt").string();
    save_checkpoint(path, *source, nullptr, TrainingState{}, nullptr, c10::Device(c10::kCPU));
    return path;
  }
  static at::Tensor get(const IntentClassifier& m, const std::string& name) {
    for (const auto& p : m->named_parameters()) {
      if (p.key() == name) return p.value();
    }
    for (const auto& b : m->named_buffers()) {
      if (b.key() == name) return b.value();
    }
    ADD_FAILURE() << "no tensor " << name;
    return {};
  }
  test::TempDir dir_;
};

TEST_F(WarmStartTest, CopiesTheNamedPartsOnlyWhateverTheHead) {
  IntentClassifier source(options(7, 5));
  source->encoder("audio")->as<AudioEncoderImpl>()->set_feature_stats(torch::full({8}, -3.f), torch::full({8}, 2.f));
  const auto path = saved(source);
  IntentClassifier target(options(3, 5));
  const auto head_before = get(target, "head.1.weight").clone();
  const auto text_before = get(target, "text_encoder.embedding.weight").clone();
  const auto w = warm_start(*target, path, {"audio_encoder"});
  EXPECT_GT(w.tensors, 4);
  EXPECT_TRUE(w.skipped.empty());
  for (const auto& p : target->named_parameters()) {
    if (p.key().rfind("audio_encoder.", 0) == 0) {
      EXPECT_TRUE(torch::equal(p.value(), get(source, p.key()))) << p.key();
    }
  }
  EXPECT_TRUE(torch::equal(get(target, "audio_encoder.feature_mean"), torch::full({8}, -3.f)));  // buffers too
  EXPECT_TRUE(torch::equal(get(target, "head.1.weight"), head_before));
  EXPECT_TRUE(torch::equal(get(target, "text_encoder.embedding.weight"), text_before));
}

TEST_F(WarmStartTest, RefusesAPartTheModelLacksAndATensorShapedDifferently) {
  IntentClassifier source(options(7, 5));
  const auto path = saved(source);
  IntentClassifier other(options(3, 6));
  try {
    warm_start(*other, path, {"audio_encoder"});
    FAIL() << "a hidden size of 6 took the weights of 5";
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("audio_encoder.rnn."), std::string::npos) << msg;
    EXPECT_NE(msg.find("has shape"), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
  try {
    warm_start(*other, path, {"speech_encoder"});
    FAIL() << "a part the model lacks";
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'speech_encoder' names no part"), std::string::npos) << msg;
    EXPECT_NE(msg.find("audio_encoder, head, text_encoder"), std::string::npos) << msg;
  }
  EXPECT_THROW(warm_start(*other, (dir_.path() / "none.pt").string(), {}), CheckpointError);
  const auto junk = dir_.write("junk.pt", "not a checkpoint");
  EXPECT_THROW(warm_start(*other, junk, {}), CheckpointError);
}

TEST_F(WarmStartTest, WithoutPartsCopiesWhatMatchesAndListsTheRest) {
  IntentClassifier source(options(7, 5));
  const auto path = saved(source);
  IntentClassifier target(options(3, 5));
  const auto w = warm_start(*target, path, {});
  // The head's last layer has 3 rows here, 7 there: skipped; everything else copied.
  EXPECT_EQ(w.skipped, (std::vector<std::string>{"head.4.weight", "head.4.bias"})) << ::testing::PrintToString(w.skipped);
  EXPECT_TRUE(torch::equal(get(target, "head.1.weight"), get(source, "head.1.weight")));
  EXPECT_TRUE(torch::equal(get(target, "text_encoder.embedding.weight"), get(source, "text_encoder.embedding.weight")));
}

}  // namespace
}  // namespace mmintent
