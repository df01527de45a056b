#include "data/data_fixture.h"

namespace mmintent::test {

const std::vector<std::string> kTexts = {
    "turn on the kitchen light",        "play some quiet music please",
    "book a table for two tonight",     "what is the weather like tomorrow",
    "set an alarm for seven",           "order a large pizza with cheese",
    "cancel my meeting this afternoon", "call my sister now",
    "how long is the drive to work",    "remind me to water the plants every evening after dinner",
};
const std::vector<std::string> kLabels = {"alpha", "beta", "gamma"};

cv::Mat grey_pattern(int seed) {
  cv::Mat m(8, 8, CV_8UC1);
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 8; ++x)
      m.at<uint8_t>(y, x) = static_cast<uint8_t>((seed * 37 + y * 29 + x * 11) % 256);
  }
  return m;
}

void expect_same_tensor(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  ASSERT_EQ(a.scalar_type(), b.scalar_type()) << what;
  EXPECT_TRUE(at::equal(a, b)) << what;
}

void expect_same_batch(const Batch& a, const Batch& b, const std::string& what) {
  expect_same_tensor(a.input("text").data, b.input("text").data, what + " token_ids");
  expect_same_tensor(a.input("text").lengths, b.input("text").lengths, what + " lengths");
  expect_same_tensor(a.input("text").mask, b.input("text").mask, what + " text_mask");
  expect_same_tensor(a.input("image").data, b.input("image").data, what + " images");
  expect_same_tensor(a.input("image").mask, b.input("image").mask, what + " image_mask");
  expect_same_tensor(a.labels, b.labels, what + " labels");
  expect_same_tensor(a.indices, b.indices, what + " indices");
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

}  // namespace mmintent::test
