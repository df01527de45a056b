#include "mmintent/error.h"
#include "mmintent/models/image_encoder.h"
#include "mmintent/training/precision.h"
#include "mmintent/training/trainer.h"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace mmintent {
namespace {

TEST(PrecisionTest, ParsesTheTwoNames) {
  EXPECT_EQ(parse_precision("fp32"), Precision::fp32);
  EXPECT_EQ(parse_precision("bf16"), Precision::bf16);
  EXPECT_STREQ(to_string(Precision::bf16), "bf16");
  EXPECT_THROW(parse_precision("fp16"), Error);
}

TEST(PrecisionTest, AutocastGuardRunsMatrixProductsInBf16AndRestoresTheState) {
  torch::manual_seed(0);
  torch::nn::Linear linear(8, 4);
  const auto x = torch::randn({3, 8});
  const auto reference = linear->forward(x);
  ASSERT_EQ(reference.scalar_type(), torch::kFloat);
  {
    AutocastGuard fp32(torch::kCPU, Precision::fp32);
    EXPECT_EQ(linear->forward(x).scalar_type(), torch::kFloat);
  }
  {
    AutocastGuard bf16(torch::kCPU, Precision::bf16);
    const auto y = linear->forward(x);
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
    // bf16 keeps 8 bits of mantissa: close to fp32, not equal.
    EXPECT_TRUE(torch::allclose(y.to(torch::kFloat), reference, 0.05, 0.05));
    {
      AutocastGuard nested(torch::kCPU, Precision::bf16);
      EXPECT_EQ(linear->forward(x).scalar_type(), torch::kBFloat16);
    }
    EXPECT_EQ(linear->forward(x).scalar_type(), torch::kBFloat16);  // the outer guard holds
  }
  EXPECT_EQ(linear->forward(x).scalar_type(), torch::kFloat);  // restored
  // Weights and their gradients stay fp32.
  {
    AutocastGuard bf16(torch::kCPU, Precision::bf16);
    linear->forward(x).to(torch::kFloat).sum().backward();
  }
  EXPECT_EQ(linear->weight.grad().scalar_type(), torch::kFloat);
  EXPECT_EQ(linear->weight.scalar_type(), torch::kFloat);
}

TEST(PrecisionTest, ChannelsLastImageEncoderComputesTheSameFeatures) {
  auto options = ImageEncoderOptions().in_channels(3).channels({8, 16}).convs_per_block(2).dropout(0);
  torch::manual_seed(1);
  ImageEncoder plain(options);
  torch::manual_seed(1);
  ImageEncoder nhwc(options.channels_last(true));
  plain->eval();
  nhwc->eval();
  bool converted = false;
  for (const auto& p : nhwc->parameters()) {
    if (p.dim() == 4) {
      EXPECT_TRUE(p.is_contiguous(at::MemoryFormat::ChannelsLast));
      converted = true;
    }
  }
  EXPECT_TRUE(converted);
  const auto images = torch::randn({4, 3, 16, 16});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(plain->forward(images), nhwc->forward(images), 1e-4, 1e-5));
  // Moving keeps the memory order.
  nhwc->to(torch::kCPU, torch::kFloat);
  for (const auto& p : nhwc->parameters()) {
    if (p.dim() == 4) {
      EXPECT_TRUE(p.is_contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
}

}  // namespace
}  // namespace mmintent
