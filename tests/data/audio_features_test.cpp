// Log-mel features: the mel filterbank against values computed by hand, the extractor against
// an independent computation through LibTorch's STFT, a tone's energy in the right band,
// per-utterance normalisation and SpecAugment's determinism and bounds.
#include "mmintent/data/audio_features.h"
#include "mmintent/error.h"
#include "support/audio.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace mmintent {
namespace {

TEST(MelFilterbankTest, MatchesValuesComputedByHand) {
  // 2 filters over 0-4000 Hz at 8 kHz with n_fft 8 (bins at 0, 1000, ..., 4000 Hz). HTK mel
  // points 0, 715.35, 1430.71, 2146.06 mel = 0, 620.58, 1791.33, 4000 Hz, so filter 0 peaks at
  // 620.58 Hz and filter 1 at 1791.33 Hz: at 1000 Hz filter 0 is on its falling side,
  // (1791.33 - 1000) / (1791.33 - 620.58) = 0.6759, filter 1 on its rising side,
  // (1000 - 620.58) / (1791.33 - 620.58) = 0.3241; at 2000 Hz filter 1 falls:
  // (4000 - 2000) / (4000 - 1791.33) = 0.9055; at 3000 Hz: 1000 / 2208.67 = 0.4528.
  EXPECT_NEAR(hz_to_mel(4000), 2146.06, 0.01);
  EXPECT_NEAR(mel_to_hz(715.353), 620.58, 0.01);
  const auto fb = mel_filterbank(2, 8, 8000, 0, 4000);
  ASSERT_EQ(fb.size(), 10u);
  const std::vector<float> expected{0, 0.6759f, 0, 0, 0, 0, 0.3241f, 0.9055f, 0.4528f, 0};
  for (size_t i = 0; i < fb.size(); ++i) EXPECT_NEAR(fb[i], expected[i], 1e-3) << "entry " << i;
  EXPECT_THROW(mel_filterbank(2, 8, 8000, 3000, 2000), std::invalid_argument);
}

TEST(LogMelTest, MatchesAnIndependentStftAndMelMatrix) {
  AudioOptions o;  // 16 kHz, 25 ms window (400), 10 ms hop (160), n_fft 512, 64 mels
  LogMelExtractor extractor(o);
  EXPECT_EQ(extractor.window(), 400);
  EXPECT_EQ(extractor.hop(), 160);
  EXPECT_EQ(extractor.n_fft(), 512);
  // A chirp-like mix: two tones and a little deterministic noise.
  std::vector<float> x = test::sine(440, 16000, 8000, 0.5);
  const auto y = test::sine(3100, 16000, 8000, 0.2);
  for (size_t i = 0; i < x.size(); ++i) x[i] += y[i] + 0.01f * float(int(i * 7919 % 101) - 50) / 50.f;
  const auto ours = extractor.compute(x.data(), static_cast<int64_t>(x.size()));
  const int64_t frames = extractor.frames(8000);
  ASSERT_EQ(frames, 1 + 8000 / 160);
  ASSERT_EQ(static_cast<int64_t>(ours.size()), frames * 64);

  // Reference: zero-pad n_fft/2 each side, torch::stft with a periodic Hann window of 400
  // centred in 512 points, power spectrum, the filterbank as a matrix, log(x + 1e-6).
  auto signal = torch::from_blob(x.data(), {1, 8000}, torch::kFloat).to(torch::kDouble);
  signal = torch::constant_pad_nd(signal, {256, 256}, 0);
  auto window = torch::hann_window(400, /*periodic=*/true, torch::kDouble);
  auto spec = torch::stft(signal, 512, 160, 400, window, /*normalized=*/false, /*onesided=*/true,
                          /*return_complex=*/true);  // [1, 257, frames]
  auto power = spec.abs().pow(2)[0];                  // [257, frames]
  const auto& fb = extractor.filterbank();
  auto mel = torch::from_blob(const_cast<float*>(fb.data()), {64, 257}, torch::kFloat).to(torch::kDouble);
  auto reference = torch::log(torch::matmul(mel, power) + 1e-6).t().contiguous();  // [frames, 64]
  reference = torch::clamp_min(reference, reference.max().item<double>() - std::log(1e8));  // top 80 dB
  ASSERT_EQ(reference.size(0), frames);
  const auto* ref = reference.data_ptr<double>();
  double worst = 0;
  for (int64_t i = 0; i < frames * 64; ++i) worst = std::max(worst, std::abs(ref[i] - double(ours[i])));
  EXPECT_LT(worst, 1e-3);
}

TEST(LogMelTest, PutsAToneInTheBandAroundItsFrequency) {
  AudioOptions o;
  o.n_mels = 40;
  LogMelExtractor extractor(o);
  const double hz = 1000;
  const auto x = test::sine(hz, 16000, 16000);
  const auto f = extractor.compute(x.data(), 16000);
  const int64_t t = extractor.frames(16000) / 2;  // a frame in the middle
  const float* row = f.data() + t * 40;
  const auto peak = std::max_element(row, row + 40) - row;
  // The filter whose centre (mel point peak + 1) lies nearest 1 kHz.
  const double lo = hz_to_mel(o.f_min), hi = hz_to_mel(8000);
  int64_t nearest = 0;
  double best = 1e9;
  for (int64_t m = 0; m < 40; ++m) {
    const double centre = mel_to_hz(lo + (hi - lo) * double(m + 1) / 41.0);
    if (std::abs(centre - hz) < best) best = std::abs(centre - hz), nearest = m;
  }
  EXPECT_LE(std::abs(peak - nearest), 1) << "peak band " << peak << ", nearest " << nearest;
  // Silence: every value log(1e-6).
  const std::vector<float> silence(1600, 0.f);
  for (float v : extractor.compute(silence.data(), 1600)) EXPECT_NEAR(v, std::log(1e-6), 1e-4);
  // Nothing lies more than 80 dB under the loudest value.
  const float loudest = *std::max_element(f.begin(), f.end());
  for (float v : f) EXPECT_GE(v, loudest - std::log(1e8) - 1e-4);
}

TEST(LogMelTest, BadOptionsAreRefusedNamingTheKey) {
  AudioOptions o;
  o.hop_ms = 40;  // more than the window
  try {
    LogMelExtractor extractor(o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.audio.hop_ms"), std::string::npos) << e.what();
  }
}

TEST(NormalizeUtteranceTest, GivesEachBandZeroMeanAndUnitVariance) {
  std::vector<float> f{1, 10, 3, 10, 5, 10, 7, 10};  // 4 frames x 2 bands; band 1 constant
  normalize_utterance(f.data(), 4, 2);
  double mean = 0, var = 0;
  for (int t = 0; t < 4; ++t) mean += f[t * 2];
  for (int t = 0; t < 4; ++t) var += f[t * 2] * f[t * 2];
  EXPECT_NEAR(mean / 4, 0, 1e-6);
  EXPECT_NEAR(var / 4, 1, 1e-5);
  EXPECT_NEAR(f[0], (1 - 4) / std::sqrt(5.0), 1e-5);
  for (int t = 0; t < 4; ++t) EXPECT_EQ(f[t * 2 + 1], 0.f);  // constant: only centred
}

TEST(SpecAugmentTest, IsDeterministicFromTheSeedAndMasksWithinBounds) {
  const int64_t T = 200, M = 64;
  std::vector<float> base(static_cast<size_t>(T * M));
  for (size_t i = 0; i < base.size(); ++i) base[i] = float(i % 97) / 97.f + 1.f;  // never the mean exactly
  SpecAugmentOptions o;
  o.time_masks = 2;
  o.time_width = 30;
  o.max_time_ratio = 0.1;  // at most 20 frames
  o.freq_masks = 2;
  o.freq_width = 8;
  auto a = base, b = base, c = base;
  spec_augment(a.data(), T, M, o, 12345);
  spec_augment(b.data(), T, M, o, 12345);
  spec_augment(c.data(), T, M, o, 54321);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  double mean = 0;
  for (float v : base) mean += v;
  mean /= double(base.size());
  // Frames wholly masked: at most 2 x 20; bands wholly masked: at most 2 x 8.
  int64_t frames_masked = 0, bands_masked = 0;
  for (int64_t t = 0; t < T; ++t) {
    bool all = true;
    for (int64_t m = 0; m < M; ++m) all &= std::abs(a[t * M + m] - mean) < 1e-5;
    frames_masked += all;
  }
  for (int64_t m = 0; m < M; ++m) {
    bool all = true;
    for (int64_t t = 0; t < T; ++t) all &= std::abs(a[t * M + m] - mean) < 1e-5;
    bands_masked += all;
  }
  EXPECT_LE(frames_masked, 40);
  EXPECT_LE(bands_masked, 16);
  // Over many seeds some masks are drawn wide: the masking does happen.
  int64_t changed = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto d = base;
    spec_augment(d.data(), T, M, o, seed);
    changed += d != base;
  }
  EXPECT_GE(changed, 18);
  // No masks: unchanged.
  SpecAugmentOptions none;
  none.time_masks = none.freq_masks = 0;
  auto e = base;
  spec_augment(e.data(), T, M, none, 1);
  EXPECT_EQ(e, base);
}

}  // namespace
}  // namespace mmintent
