// The fused CPU batch norm + ReLU (+ max pooling) (models/detail/fused_norm.h) against LibTorch's
// BatchNorm2d, ReLU and MaxPool2d: the same outputs, running statistics and gradients, alone
// and inside the image encoder.
#include "mmintent/models/detail/fused_norm.h"
#include "mmintent/models/image_encoder.h"
#include "support/support.h"

#include <gmock/gmock.h>

#include <torch/torch.h>

using namespace mmintent;
using namespace mmintent::detail;  // the kernels are internal (models/detail)

namespace {

class FusedNormTest : public test::SeededTest {};

torch::Tensor channels_last(const torch::Tensor& x) {
  return x.contiguous(at::MemoryFormat::ChannelsLast);
}

struct LayerResult {
  torch::Tensor output, dx, dweight, dbias, running_mean, running_var;
};

/// One training step of batch norm (`channels` channels, random affine parameters and running
/// statistics) + ReLU (+ 2x2 max pooling), fused or through LibTorch's modules, on `x`;
/// backward of a fixed random weighting of the output.
LayerResult run_layer(bool fused, const torch::Tensor& x_in, bool pool, uint64_t seed) {
  torch::manual_seed(seed);
  const auto dtype = x_in.scalar_type();
  const int64_t c = x_in.size(1);
  torch::nn::BatchNorm2d bn(torch::nn::BatchNorm2dOptions(c).momentum(0.3).eps(1e-4));
  bn->to(dtype);
  {
    torch::NoGradGuard no_grad;
    bn->weight.copy_(torch::randn({c}, dtype));  // negative scales too: the window's max flips
    bn->bias.copy_(torch::randn({c}, dtype));
    bn->running_mean.copy_(torch::randn({c}, dtype));
    bn->running_var.copy_(torch::rand({c}, dtype) + 0.5);
  }
  auto x = x_in.detach().clone(at::MemoryFormat::ChannelsLast).requires_grad_(true);
  torch::Tensor y;
  if (fused) {
    y = batch_norm_relu_pool(x, bn->weight, bn->bias, bn->running_mean, bn->running_var, 0.3,
                             1e-4, pool);
  } else {
    y = torch::relu(bn->forward(x));
    if (pool) y = torch::max_pool2d(y, 2);
  }
  const auto weights = torch::randn(y.sizes(), dtype);
  (y * weights).sum().backward();
  return {y.detach(), x.grad(), bn->weight.grad(), bn->bias.grad(), bn->running_mean.clone(),
          bn->running_var.clone()};
}

void expect_close(const LayerResult& a, const LayerResult& b, double tolerance,
                  const std::string& where) {
  const std::pair<const char*, std::pair<torch::Tensor, torch::Tensor>> pairs[] = {
      {"output", {a.output, b.output}},         {"input gradient", {a.dx, b.dx}},
      {"weight gradient", {a.dweight, b.dweight}}, {"bias gradient", {a.dbias, b.dbias}},
      {"running mean", {a.running_mean, b.running_mean}},
      {"running variance", {a.running_var, b.running_var}}};
  for (const auto& [what, t] : pairs) {
    ASSERT_EQ(t.first.sizes(), t.second.sizes()) << where << ": " << what;
    EXPECT_TRUE(torch::allclose(t.first, t.second, tolerance, tolerance))
        << where << ": " << what << " differs by "
        << (t.first - t.second).abs().max().item<double>();
  }
}

TEST_F(FusedNormTest, SameFunctionAsLibTorchInDouble) {
  // Even and odd sizes (odd: the pooling drops the last row/column, which still takes part in
  // the statistics and gets a gradient through them), one channel and several.
  for (const auto& shape : std::vector<std::vector<int64_t>>{
           {4, 3, 6, 6}, {3, 5, 7, 5}, {2, 1, 4, 9}, {5, 16, 2, 2}}) {
    for (const bool pool : {false, true}) {
      const auto x = torch::randn(shape, torch::kDouble) * 2 + 0.5;
      const auto where = c10::str(x.sizes(), pool ? " pooled" : "");
      const auto fused = run_layer(true, x, pool, 5);
      EXPECT_TRUE(fused.output.is_contiguous(at::MemoryFormat::ChannelsLast)) << where;
      expect_close(fused, run_layer(false, x, pool, 5), 1e-10, where);
    }
  }
}

TEST_F(FusedNormTest, SameFunctionAsLibTorchInFloat) {
  for (const bool pool : {false, true}) {
    const auto x = torch::randn({8, 12, 10, 10}) * 3 - 1;
    expect_close(run_layer(true, x, pool, 9), run_layer(false, x, pool, 9), 2e-5,
                 pool ? "float pooled" : "float");
  }
}

TEST_F(FusedNormTest, TiesInAWindowRouteTheGradientLikeLibTorch) {
  // Integer-valued inputs with many equal values in a window: the gradient goes to the first
  // maximum in row order, as LibTorch's pooling does, and nowhere where the ReLU clipped.
  const auto x = torch::randint(-2, 3, {3, 4, 6, 8}, torch::kDouble);
  expect_close(run_layer(true, x, true, 2), run_layer(false, x, true, 2), 1e-10, "ties");
}

TEST_F(FusedNormTest, SameResultWithAnyThreadCount) {
  // Sums run over fixed chunks, not per thread: bit for bit the same with 1 and 2 threads.
  const auto x = torch::randn({16, 32, 14, 14});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = run_layer(true, x, true, 3);
  at::set_num_threads(2);
  const auto two = run_layer(true, x, true, 3);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one.output, two.output));
  EXPECT_TRUE(torch::equal(one.dx, two.dx));
  EXPECT_TRUE(torch::equal(one.dweight, two.dweight));
}

TEST_F(FusedNormTest, RejectsWhatItCannotRun) {
  auto w = torch::ones({3}), b = torch::zeros({3}), m = torch::zeros({3}), v = torch::ones({3});
  const auto call = [&](const torch::Tensor& x) {
    return batch_norm_relu_pool(x, w, b, m, v, 0.1, 1e-5, true);
  };
  EXPECT_THAT([&] { call(torch::randn({2, 3, 4, 4})); },  // NCHW
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("channels-last")));
  EXPECT_THAT([&] { call(channels_last(torch::randn({2, 3, 4, 4}).to(torch::kBFloat16))); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("float or double")));
  EXPECT_THAT([&] { call(channels_last(torch::randn({2, 4, 4, 4}))); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("must be 4 contiguous")));
  EXPECT_THAT([&] { call(channels_last(torch::randn({1, 3, 1, 1}))); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("more than 1 value")));
  EXPECT_THAT([&] { call(channels_last(torch::randn({2, 3, 1, 4}))); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("at least 2x2")));
  EXPECT_FALSE(fused_norm_supported(torch::randn({2, 3, 4, 4})));
  EXPECT_TRUE(fused_norm_supported(channels_last(torch::randn({2, 3, 4, 4}))));
}

ImageEncoderOptions encoder_options(const std::string& pool, int64_t convs, bool channels_last_,
                                    const std::string& kernel) {
  return ImageEncoderOptions()
      .in_channels(2)
      .channels({4, 6})
      .convs_per_block(convs)
      .pool(pool)
      .dropout(0.2)
      .out_dim(5)
      .channels_last(channels_last_)
      .norm_kernel(kernel);
}

struct EncoderResult {
  torch::Tensor output;
  std::map<std::string, torch::Tensor> grads, buffers;
};

EncoderResult run_encoder(ImageEncoder& enc, const torch::Tensor& images,
                          const torch::Tensor& weights) {
  enc->train();
  enc->zero_grad();
  torch::manual_seed(11);  // the same dropout masks on both sides
  auto out = enc->forward(images);
  (out * weights).sum().backward();
  EncoderResult r{out.detach(), {}, {}};
  for (const auto& p : enc->named_parameters()) r.grads[p.key()] = p.value().grad().clone();
  for (const auto& p : enc->named_buffers()) r.buffers[p.key()] = p.value().clone();
  return r;
}

TEST_F(FusedNormTest, ImageEncoderTrainsTheSameWithEitherKernel) {
  // Two steps (the running statistics and the batch count accumulate), with max, average and no
  // pooling, one and two convolutions per block, the default momentum and the cumulative
  // average (momentum unset).
  for (const std::string pool : {"max", "avg", "none"}) {
    for (const int64_t convs : {1, 2}) {
      for (const bool cumulative : {false, true}) {
        const auto where = pool + " convs=" + std::to_string(convs) +
                           (cumulative ? " cumulative" : "");
        ImageEncoder fused(encoder_options(pool, convs, true, "fused"));
        ImageEncoder native(encoder_options(pool, convs, true, "native"));
        fused->to(torch::kDouble);
        native->to(torch::kDouble);
        {
          torch::NoGradGuard no_grad;
          auto target = native->named_parameters();
          for (const auto& p : fused->named_parameters()) target[p.key()].copy_(p.value());
        }
        if (cumulative) {
          for (auto* enc : {&fused, &native}) {
            for (const auto& m : (*enc)->modules()) {
              if (auto* bn = m->as<torch::nn::BatchNorm2d>()) bn->options.momentum(c10::nullopt);
            }
          }
        }
        for (int step = 0; step < 2; ++step) {
          const auto images = torch::randn({3, 2, 9, 8}, torch::kDouble);
          const auto weights = torch::randn({3, 5}, torch::kDouble);
          const auto a = run_encoder(fused, images, weights);
          const auto b = run_encoder(native, images, weights);
          EXPECT_TRUE(torch::allclose(a.output, b.output, 1e-10, 1e-10)) << where;
          for (const auto& [name, g] : a.grads) {
            EXPECT_TRUE(torch::allclose(g, b.grads.at(name), 1e-10, 1e-10))
                << where << ": gradient of " << name << " differs by "
                << (g - b.grads.at(name)).abs().max().item<double>();
          }
          for (const auto& [name, t] : a.buffers) {
            EXPECT_TRUE(torch::allclose(t.to(torch::kDouble), b.buffers.at(name).to(torch::kDouble),
                                        1e-10, 1e-10))
                << where << ": buffer " << name;
          }
        }
      }
    }
  }
}

TEST_F(FusedNormTest, ImageEncoderSaysWhyFusedCannotRun) {
  EXPECT_THAT([] { ImageEncoder(encoder_options("max", 1, true, "fastest")); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("norm_kernel must be")));
  ImageEncoder nchw(encoder_options("max", 1, false, "fused"));
  const auto images = torch::randn({2, 2, 8, 8});
  EXPECT_THAT([&] { nchw->forward(images); },
              testing::ThrowsMessage<c10::Error>(testing::HasSubstr("norm_kernel 'fused'")));
  nchw->eval();  // evaluation runs LibTorch's kernels with the running statistics
  EXPECT_EQ(nchw->forward(images).sizes(), (std::vector<int64_t>{2, 5}));
  ImageEncoder automatic(encoder_options("max", 1, false, "auto"));
  EXPECT_EQ(automatic->forward(images).sizes(), (std::vector<int64_t>{2, 5}));
}

}  // namespace
