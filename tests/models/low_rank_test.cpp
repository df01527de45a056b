// Low-rank adapters (models/low_rank.h): an adapted forward pass equals the merged weights' on
// every path (linear layers, the fused CPU RNN kernel, LibTorch's RNN), gradients reach only the
// adapter and are the chain rule's, and targets select what they say.

#include "mmintent/models/intent_classifier.h"
#include "mmintent/models/low_rank.h"
#include "support/support.h"
#include "support/synthetic.h"

#include <torch/torch.h>

using namespace mmintent;

namespace {

class LowRankTest : public test::SeededTest {};

IntentClassifierOptions options(const std::string& rnn, const std::string& kernel) {
  IntentClassifierOptions o;
  o.num_classes(8).modalities({"text", "image"});
  o.text(TextEncoderOptions().vocab_size(30).embedding_dim(8).hidden_size(12).type(rnn).num_layers(2).rnn_kernel(kernel));
  o.image(ImageEncoderOptions().channels({4, 8}).out_dim(10));
  o.fusion(FusionOptions().type("gated").dim(16));
  o.head(HeadOptions().hidden({16}).dropout(0.0));
  return o;
}

/// Gives every B a random value, so that the adapter changes the model.
void perturb(LowRankAdapter& adapter) {
  torch::NoGradGuard no_grad;
  for (const auto& p : adapter->named_parameters()) {
    if (p.key()[0] == 'B') p.value().normal_(0, 0.2);
  }
}

TEST_F(LowRankTest, AdaptedForwardEqualsTheMergedWeights) {
  test::SyntheticSource src(6, 6, 1, false);
  const auto batch = src.all();
  for (const std::string rnn : {"lstm", "gru"}) {
    for (const std::string kernel : {"fused", "native"}) {
      IntentClassifier model(options(rnn, kernel));
      model->eval();
      const auto before = model->forward(batch).detach();
      auto adapter = LowRankAdapter(*model, LowRankOptions().rank(4).alpha(8).targets({"linear", "rnn", "embedding"}));
      model->attach_adapter(adapter);
      // A fresh adapter (B = 0) changes nothing.
      EXPECT_TRUE(torch::allclose(model->forward(batch), before, 1e-6, 1e-6)) << rnn << " " << kernel;
      perturb(adapter);
      const auto adapted = model->forward(batch).detach();
      EXPECT_FALSE(torch::allclose(adapted, before, 1e-3, 1e-3)) << rnn << " " << kernel;
      model->merge_adapter();
      EXPECT_FALSE(model->adapter());
      for (const auto& p : model->named_parameters()) EXPECT_NE(p.key().rfind("lora.", 0), 0u) << p.key();
      EXPECT_TRUE(torch::allclose(model->forward(batch), adapted, 1e-5, 1e-5)) << rnn << " " << kernel;
    }
  }
}

TEST_F(LowRankTest, GradientsReachTheAdapterAsTheChainRuleSays) {
  test::SyntheticSource src(6, 6, 2, false);
  const auto batch = src.all();
  for (const std::string kernel : {"fused", "native"}) {
    IntentClassifier model(options("lstm", kernel));
    model->eval();  // no dropout: the same graph as the check below
    auto adapter = LowRankAdapter(*model, LowRankOptions().rank(3).alpha(6).targets({"linear", "rnn", "embedding"}));
    model->attach_adapter(adapter);
    perturb(adapter);
    torch::nn::functional::cross_entropy(model->forward(batch), batch.labels).backward();
    // W_eff = W + s B A: dL/dB = s dL/dW A^T and dL/dA = s B^T dL/dW, with dL/dW = dL/dW_eff.
    const double s = 6.0 / 3.0;
    const auto params = model->named_parameters();
    for (std::size_t i = 0; i < adapter->targets().size(); ++i) {
      const auto& name = adapter->targets()[i];
      const auto w_grad = params[name].grad();
      ASSERT_TRUE(w_grad.defined()) << name;
      const auto a = params["lora.A" + std::to_string(i)], b = params["lora.B" + std::to_string(i)];
      EXPECT_TRUE(torch::allclose(b.grad(), s * w_grad.matmul(a.t()), 1e-4, 1e-6)) << kernel << " " << name;
      EXPECT_TRUE(torch::allclose(a.grad(), s * b.t().matmul(w_grad), 1e-4, 1e-6)) << kernel << " " << name;
      EXPECT_GT(b.grad().abs().sum().item<double>(), 0) << name;
    }
  }
}

TEST_F(LowRankTest, TargetsSelectLinearLayersAndRecurrentInputMatrices) {
  IntentClassifier model(options("lstm", "auto"));
  const auto rnn = LowRankAdapter(*model, LowRankOptions().targets({"rnn"}));
  // 2 layers x 2 directions.
  EXPECT_EQ(rnn->targets(), (std::vector<std::string>{"text_encoder.rnn.weight_ih_l0", "text_encoder.rnn.weight_ih_l0_reverse",
                                                       "text_encoder.rnn.weight_ih_l1", "text_encoder.rnn.weight_ih_l1_reverse"}));
  const auto linear = LowRankAdapter(*model, LowRankOptions().targets({"linear"}).rank(2));
  int64_t expected = 0;
  for (const auto& name : linear->targets()) {
    EXPECT_EQ(name.substr(name.size() - 7), ".weight") << name;
    const auto w = model->named_parameters()[name];
    expected += 2 * (w.size(0) + w.size(1));
  }
  // The image encoder's projection, the gated fusion's three layers, the head's two.
  EXPECT_EQ(linear->targets().size(), 6u);
  EXPECT_EQ(linear->adapter_parameters(), expected);
  EXPECT_EQ(LowRankAdapter(*model, LowRankOptions())->targets().size(), 10u);
  EXPECT_EQ(LowRankAdapter(*model, LowRankOptions().targets({"embedding"}))->targets(),
            std::vector<std::string>{"text_encoder.embedding.weight"});
  EXPECT_THROW(LowRankAdapter(*model, LowRankOptions().targets({"conv"})), c10::Error);
  EXPECT_THROW(LowRankAdapter(*model, LowRankOptions().rank(0)), c10::Error);
  EXPECT_THROW(LowRankAdapter(*model, LowRankOptions().targets({})), c10::Error);
}

TEST_F(LowRankTest, AnAdapterForAnotherArchitectureIsRefused) {
  IntentClassifier model(options("lstm", "auto"));
  auto adapter = LowRankAdapter(*model, LowRankOptions());
  auto other_options = options("lstm", "auto");
  other_options.head(HeadOptions().hidden({24}).dropout(0.0));
  IntentClassifier other(other_options);
  try {
    adapter->merge_into(*other);
    FAIL() << "merged into another architecture";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("head."), std::string::npos) << e.what();
  }
  EXPECT_THROW(other->attach_adapter(adapter), c10::Error);
  EXPECT_FALSE(other->adapter());
}

}  // namespace
