// The fused CPU LSTM/GRU (models/detail/fused_rnn.h) against LibTorch's own kernels: the same
// outputs and the same gradients for every parameter and the input, over batches of unequal
// lengths, both directions, several layers and every pooling.
#include "mmintent/models/detail/fused_rnn.h"
#include "mmintent/models/text_encoder.h"
#include "mmintent/training/precision.h"
#include "support/support.h"

#include <gmock/gmock.h>

#include <torch/torch.h>

using namespace mmintent;
using namespace mmintent::detail;  // the kernels are internal (models/detail)

namespace {

class FusedRnnTest : public test::SeededTest {};

TextEncoderOptions encoder_options(const std::string& type, const std::string& pooling,
                                   int64_t layers, bool bidirectional) {
  return TextEncoderOptions()
      .vocab_size(40)
      .embedding_dim(7)
      .hidden_size(9)
      .num_layers(layers)
      .bidirectional(bidirectional)
      .type(type)
      .pooling(pooling);
}

/// A batch of 6 with lengths 1 to 8 in no order, one empty text (packed as length 1) and a
/// tie, padded to 10.
std::pair<torch::Tensor, torch::Tensor> uneven_batch() {
  const std::vector<int64_t> lengths = {3, 8, 1, 0, 5, 3};
  auto ids = torch::zeros({6, 10}, torch::kLong);
  for (int64_t b = 0; b < 6; ++b) {
    if (lengths[b] > 0) ids[b].narrow(0, 0, lengths[b]).copy_(torch::randint(1, 40, {lengths[b]}));
  }
  return {ids, torch::tensor(lengths)};
}

struct Result {
  torch::Tensor output;
  std::map<std::string, torch::Tensor> grads;
};

/// Forward, then backward of a fixed random weighting of the output.
Result run(TextEncoder& enc, const torch::Tensor& ids, const torch::Tensor& lengths,
           const torch::Tensor& weights) {
  enc->zero_grad();
  auto out = enc->forward(ids, lengths);
  (out * weights).sum().backward();
  Result r{out.detach(), {}};
  for (const auto& p : enc->named_parameters()) r.grads[p.key()] = p.value().grad().clone();
  return r;
}

void expect_same_function(const std::string& type, const std::string& pooling, int64_t layers,
                          bool bidirectional, torch::Dtype dtype, double tolerance) {
  const auto where = type + " " + pooling + " layers=" + std::to_string(layers) +
                     (bidirectional ? " bidirectional " : " ") + c10::toString(dtype);
  TextEncoder fused(encoder_options(type, pooling, layers, bidirectional).rnn_kernel("fused"));
  TextEncoder native(encoder_options(type, pooling, layers, bidirectional).rnn_kernel("native"));
  fused->to(dtype);
  native->to(dtype);
  {
    torch::NoGradGuard no_grad;
    auto target = native->named_parameters();
    for (const auto& p : fused->named_parameters()) target[p.key()].copy_(p.value());
  }
  const auto [ids, lengths] = uneven_batch();
  const auto weights = torch::randn({6, fused->output_dim()}, dtype);
  const auto a = run(fused, ids, lengths, weights);
  const auto b = run(native, ids, lengths, weights);
  EXPECT_TRUE(torch::allclose(a.output, b.output, tolerance, tolerance))
      << where << ": outputs differ by " << (a.output - b.output).abs().max().item<double>();
  for (const auto& [name, grad] : a.grads) {
    const auto& other = b.grads.at(name);
    EXPECT_TRUE(torch::allclose(grad, other, tolerance, tolerance))
        << where << ": gradient of " << name << " differs by "
        << (grad - other).abs().max().item<double>();
  }
}

TEST_F(FusedRnnTest, SameOutputsAndGradientsAsLibTorchInDouble) {
  for (const std::string type : {"lstm", "gru"}) {
    for (const std::string pooling : {"last", "mean", "max"}) {
      for (const int64_t layers : {1, 2}) {
        for (const bool bidirectional : {false, true}) {
          expect_same_function(type, pooling, layers, bidirectional, torch::kDouble, 1e-10);
        }
      }
    }
  }
}

TEST_F(FusedRnnTest, SameOutputsAndGradientsAsLibTorchInFloat) {
  for (const std::string type : {"lstm", "gru"}) {
    expect_same_function(type, "mean", 2, true, torch::kFloat, 1e-5);
  }
}

TEST_F(FusedRnnTest, DirectionMatchesLibTorchOnAFullBatch) {
  // Equal lengths: every step has all rows, the reverse direction starts every sequence at
  // once. The layer function itself, against at::lstm on the padded batch.
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(4, 3).batch_first(false));
  const auto x = torch::randn({5, 2, 4});  // [T, B, input]
  const auto reference = lstm->forward(x);
  const auto p = lstm->named_parameters();
  const auto fused = packed_lstm_direction(x.reshape({10, 4}), torch::full({5}, 2L),
                                           p["weight_ih_l0"], p["weight_hh_l0"],
                                           p["bias_ih_l0"], p["bias_hh_l0"], false);
  EXPECT_TRUE(torch::allclose(fused.reshape({5, 2, 3}), std::get<0>(reference), 1e-5, 1e-5));
}

TEST_F(FusedRnnTest, RejectsBadInputsWithAMessage) {
  torch::nn::GRU gru(torch::nn::GRUOptions(4, 3));
  const auto p = gru->named_parameters();
  const auto call = [&](const torch::Tensor& x, const torch::Tensor& sizes) {
    return packed_gru_direction(x, sizes, p["weight_ih_l0"], p["weight_hh_l0"],
                                p["bias_ih_l0"], p["bias_hh_l0"], false);
  };
  EXPECT_THAT([&] { call(torch::randn({5, 4}), torch::tensor({2L, 2L})); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("sum to 4")));
  EXPECT_THAT([&] { call(torch::randn({5, 4}), torch::tensor({2L, 3L})); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("non-increasing")));
  EXPECT_THAT([&] { call(torch::randn({5, 6}), torch::tensor({3L, 2L})); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("parameter shapes")));
}

TEST_F(FusedRnnTest, UnderBf16AutocastStaysCloseToFloat32) {
  // The matrix products take bfloat16 operands (8 bits of mantissa); states and gradients stay
  // float32. Against the float32 function: close, and not identical (the products did change).
  for (const std::string type : {"lstm", "gru"}) {
    TextEncoder enc(encoder_options(type, "mean", 2, true).rnn_kernel("fused"));
    const auto [ids, lengths] = uneven_batch();
    const auto weights = torch::randn({6, enc->output_dim()});
    const auto exact = run(enc, ids, lengths, weights);
    Result low;
    {
      AutocastGuard bf16(torch::Device(torch::kCPU), Precision::bf16);
      low = run(enc, ids, lengths, weights);
    }
    EXPECT_EQ(low.output.scalar_type(), torch::kFloat);
    const double out_diff = (low.output - exact.output).abs().max().item<double>();
    EXPECT_GT(out_diff, 0) << type;
    EXPECT_LT(out_diff, 2e-2) << type;
    for (const auto& [name, grad] : exact.grads) {
      const auto& g = low.grads.at(name);
      EXPECT_EQ(g.scalar_type(), torch::kFloat);
      EXPECT_LT((g - grad).abs().max().item<double>(), 3e-2 * (1 + grad.abs().max().item<double>()))
          << type << " " << name;
    }
  }
}

TEST_F(FusedRnnTest, FusedOutsideItsDomainSaysWhy) {
  const auto [ids, lengths] = uneven_batch();
  TextEncoder fused(encoder_options("lstm", "max", 1, true).rnn_kernel("fused"));
  TextEncoder automatic(encoder_options("lstm", "max", 1, true));
  fused->to(torch::kBFloat16);
  automatic->to(torch::kBFloat16);
  EXPECT_FALSE(fused_rnn_supported(torch::zeros({1, 1}, torch::kBFloat16)));
  EXPECT_EQ(automatic->forward(ids, lengths).size(0), 6);  // LibTorch's kernel
  EXPECT_THAT([&] { fused->forward(ids, lengths); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("rnn_kernel 'fused'")));
}

}  // namespace
