// int8 weights (training/quantization.h): each row within half its scale; biases, norms and
// buffers exact; the file about a quarter of the float one; a model of another architecture,
// a float checkpoint and a truncated file refused with the file named.
#include "mmintent/error.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/quantization.h"
#include "support/support.h"
#include "support/synthetic.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace mmintent {
namespace {
namespace fs = std::filesystem;

/// `f` throws CheckpointError whose message holds every one of `parts`.
template <class F>
void expect_refused(F f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

class QuantizationTest : public test::SeededTest {
 protected:
  static IntentClassifierOptions options(int64_t hidden = 32) {
    auto o = IntentClassifierOptions().num_classes(8).modalities({"text", "image"});
    o.text(TextEncoderOptions().vocab_size(30).embedding_dim(48).hidden_size(hidden));
    o.image(ImageEncoderOptions().channels({4, 8}).out_dim(16));
    o.head(HeadOptions().hidden({64}).dropout(0.0));
    return o;
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

TEST_F(QuantizationTest, EachRowIsWithinHalfItsScale) {
  auto w = torch::randn({5, 3, 4});
  w[2].zero_();  // a row of zeros keeps scale 1 and stays zero
  w[4] *= 1000;  // rows are scaled apart: a large row does not coarsen the others
  const auto q = quantize_rows(w);
  EXPECT_EQ(q.values.scalar_type(), torch::kChar);
  EXPECT_EQ(q.values.sizes(), w.sizes());
  ASSERT_EQ(q.scales.sizes(), (std::vector<int64_t>{5}));
  EXPECT_FLOAT_EQ(q.scales[2].item<float>(), 1.f);
  const auto back = dequantize_rows(q);
  for (int64_t r = 0; r < 5; ++r) {
    const float scale = q.scales[r].item<float>();
    EXPECT_LE((back[r] - w[r]).abs().max().item<float>(), scale / 2 * (1 + 1e-5f)) << "row " << r;
    if (r != 2) EXPECT_NEAR(scale, w[r].abs().max().item<float>() / 127, 1e-6 * scale + 1e-12);
    EXPECT_LE(q.values[r].abs().max().item<int>(), 127);
  }
  EXPECT_TRUE(torch::equal(back[2], torch::zeros({3, 4})));
  // The largest entry of each row is exact (it is ±127 × scale).
  EXPECT_NEAR(back[4].abs().max().item<float>(), w[4].abs().max().item<float>(), 1e-3);
  EXPECT_TRUE(quantizable(torch::zeros({2, 2})));
  EXPECT_FALSE(quantizable(torch::zeros({4})));
  EXPECT_FALSE(quantizable(torch::zeros({2, 2}, torch::kLong)));
}

TEST_F(QuantizationTest, ARoundTripKeepsTheModelWithinTheScalesAndTheRestExact) {
  IntentClassifier source(options());
  {
    // Batch norm statistics that are not the defaults, so buffers are checked too.
    test::SyntheticSource src(16, 16, 1, false);
    source->train();
    source->forward(src.all());
  }
  const auto path = (dir_.path() / "model.int8.pt").string();
  const auto summary = save_int8_weights(path, *source);
  IntentClassifier loaded(options());
  load_int8_weights(path, *loaded, c10::Device(c10::kCPU));

  int64_t matrices = 0, others = 0;
  for (const auto& p : source->named_parameters()) {
    const auto& w = p.value();
    const auto got = get(loaded, p.key());
    if (quantizable(w)) {
      ++matrices;
      const auto rows = w.reshape({w.size(0), -1});
      const auto bound = rows.abs().amax(1) / 127 / 2 * (1 + 1e-5) + 1e-12;
      EXPECT_TRUE(((got.reshape({w.size(0), -1}) - rows).abs() <= bound.unsqueeze(1)).all().item<bool>()) << p.key();
    } else {
      ++others;
      EXPECT_TRUE(torch::equal(got, w)) << p.key() << ": biases and norms stay float";
    }
  }
  for (const auto& b : source->named_buffers()) EXPECT_TRUE(torch::equal(get(loaded, b.key()), b.value())) << b.key();
  EXPECT_EQ(summary.int8_tensors, matrices);
  EXPECT_GE(matrices, 6);  // embedding, recurrent, convolution and linear weights
  EXPECT_GT(others, 0);
  EXPECT_GT(summary.max_abs_error, 0);

  // The same function, nearly: logits close, the same class for (almost) every sample.
  test::SyntheticSource src(64, 64, 2, false);
  const auto batch = src.all();
  source->eval();
  loaded->eval();
  torch::NoGradGuard no_grad;
  const auto a = source->forward(batch), b = loaded->forward(batch);
  EXPECT_LT((a - b).abs().max().item<float>(), 0.05f);
  EXPECT_GE(a.argmax(1).eq(b.argmax(1)).sum().item<int64_t>(), 62);
}

TEST_F(QuantizationTest, TheFileIsAboutAQuarterOfTheFloatOne) {
  IntentClassifier model(options(/*hidden=*/96));
  const auto f = (dir_.path() / "model.pt").string();
  const auto q = (dir_.path() / "model.int8.pt").string();
  save_checkpoint(f, *model, nullptr, TrainingState{}, nullptr, c10::Device(c10::kCPU));
  save_int8_weights(q, *model);
  const double ratio = static_cast<double>(fs::file_size(f)) / static_cast<double>(fs::file_size(q));
  EXPECT_GT(ratio, 3.0) << fs::file_size(f) << " vs " << fs::file_size(q);
  EXPECT_LT(ratio, 4.0);
}

TEST_F(QuantizationTest, RefusesAnotherArchitectureAFloatCheckpointAndATruncatedFile) {
  IntentClassifier model(options());
  const auto path = (dir_.path() / "model.int8.pt").string();
  save_int8_weights(path, *model);
  IntentClassifier wider(options(/*hidden=*/40));
  expect_refused([&] { load_int8_weights(path, *wider, torch::kCPU); },
                                           {path, "text_encoder.rnn.weight_ih_l0", "shape", "architecture"});
  auto more = options();
  more.modalities({"text", "image", "audio"});
  IntentClassifier extra(more);
  expect_refused([&] { load_int8_weights(path, *extra, torch::kCPU); },
                                           {path, "has no tensor 'audio_encoder."});

  const auto float_path = (dir_.path() / "model.pt").string();
  save_checkpoint(float_path, *model, nullptr, TrainingState{}, nullptr, c10::Device(c10::kCPU));
  expect_refused([&] { load_int8_weights(float_path, *model, torch::kCPU); },
                                           {float_path, "not an int8 weights file"});

  const auto bytes = test::read_file(path);
  const auto cut = (dir_.path() / "cut.int8.pt").string();
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_refused([&] { load_int8_weights(cut, *model, torch::kCPU); }, {cut});
  expect_refused(
      [&] { load_int8_weights((dir_.path() / "none.pt").string(), *model, torch::kCPU); }, {"none.pt", "does not exist"});
}

}  // namespace
}  // namespace mmintent
