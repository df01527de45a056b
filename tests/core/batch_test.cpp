// concat_batches: joining batches of different data sets (feedback + replay) into one.

#include "mmintent/core/batch.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <stdexcept>

namespace mmintent {
namespace {

Batch text_batch(int64_t B, int64_t T, int64_t first_token) {
  Batch b;
  b.inputs["text"].data = torch::full({B, T}, first_token, torch::kLong);
  b.inputs["text"].lengths = torch::full({B}, T, torch::kLong);
  b.inputs["text"].mask = torch::ones({B});
  b.labels = torch::arange(B, torch::kLong);
  b.indices = torch::arange(B, torch::kLong);
  return b;
}

TEST(BatchTest, ConcatPadsTokensAndFillsMissingTargets) {
  auto a = text_batch(2, 3, 7);
  auto b = text_batch(1, 5, 9);
  a.soft_targets = torch::tensor({0.f, 1.f, 0.f, 0.f, 0.f, 0.f}).view({2, 3});
  b.rejected = torch::tensor({2}, torch::kLong);
  auto c = concat_batches({a, b});
  ASSERT_EQ(c.size(), 3);
  ASSERT_EQ(c.input("text").data.sizes(), (c10::IntArrayRef{3, 5}));
  EXPECT_EQ(c.input("text").data[0][2].item<int64_t>(), 7);
  EXPECT_EQ(c.input("text").data[0][3].item<int64_t>(), 0);  // padding
  EXPECT_EQ(c.input("text").data[2][4].item<int64_t>(), 9);
  EXPECT_TRUE(c.input("text").lengths.equal(torch::tensor({3, 3, 5}, torch::kLong)));
  EXPECT_TRUE(c.labels.equal(torch::tensor({0, 1, 0}, torch::kLong)));
  ASSERT_TRUE(c.soft_targets.defined());
  EXPECT_EQ(c.soft_targets.sizes(), (c10::IntArrayRef{3, 3}));
  EXPECT_EQ(c.soft_targets[2].sum().item<float>(), 0.f);  // the part without: hard rows
  EXPECT_TRUE(c.rejected.equal(torch::tensor({-1, -1, 2}, torch::kLong)));
  EXPECT_EQ(c.find("image"), nullptr);

  // Without optional targets anywhere, none appear.
  auto plain = concat_batches({text_batch(1, 2, 1), text_batch(2, 2, 1)});
  EXPECT_FALSE(plain.soft_targets.defined());
  EXPECT_FALSE(plain.rejected.defined());
}

TEST(BatchTest, ConcatRejectsMismatchedParts) {
  EXPECT_THROW(concat_batches({}), std::invalid_argument);
  auto a = text_batch(2, 3, 1);
  auto image_only = a;
  image_only.inputs.erase("text");
  image_only.inputs["image"].data = torch::zeros({2, 1, 4, 4});
  EXPECT_THROW(concat_batches({a, image_only}), std::invalid_argument);
  auto b = text_batch(1, 3, 1);
  a.soft_targets = torch::zeros({2, 3});
  b.soft_targets = torch::zeros({1, 4});
  EXPECT_THROW(concat_batches({a, b}), std::invalid_argument);
}

}  // namespace
}  // namespace mmintent
