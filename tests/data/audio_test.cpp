// Audio: the resampler on sines of known frequency (kept, and aliased ones removed), the
// decoder's mix-down, resampling and cut, and each kind of bad audio file. WAV files are written
// here byte by byte (no libsndfile), so the reader is checked against an independent writer.
#include "mmintent/data/audio.h"
#include "mmintent/error.h"
#include "support/audio.h"
#include "support/support.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace mmintent {
namespace {
using test::sine;
using test::write_wav;

constexpr double kPi = 3.14159265358979323846;

/// Amplitude of the `hz` component of x (least squares on sin and cos), over the middle half
/// (away from the edges, where the filter sees zeros).
double amplitude_at(const std::vector<float>& x, double hz, int64_t rate) {
  const size_t a = x.size() / 4, b = 3 * x.size() / 4;
  double s = 0, c = 0;
  for (size_t i = a; i < b; ++i) {
    s += x[i] * std::sin(2 * kPi * hz * double(i) / double(rate));
    c += x[i] * std::cos(2 * kPi * hz * double(i) / double(rate));
  }
  return 2 * std::sqrt(s * s + c * c) / double(b - a);
}

double rms(const std::vector<float>& x) {
  const size_t a = x.size() / 4, b = 3 * x.size() / 4;
  double sum = 0;
  for (size_t i = a; i < b; ++i) sum += double(x[i]) * x[i];
  return std::sqrt(sum / double(b - a));
}

TEST(ResampleTest, KeepsASineBelowNyquistAtItsFrequencyAndAmplitude) {
  // 1 kHz at 22,050 Hz (espeak-ng's rate) to 16 kHz, 1 s.
  const auto in = sine(1000, 22050, 22050);
  const auto out = resample(in, 22050, 16000);
  ASSERT_EQ(out.size(), 16000u);
  EXPECT_NEAR(amplitude_at(out, 1000, 16000), 0.8, 0.8 * 0.005);
  // Nothing else: the residual after the 1 kHz sine is tiny.
  const auto ideal = sine(1000, 16000, 16000);
  double err = 0;
  for (size_t i = 4000; i < 12000; ++i) err = std::max(err, std::abs(double(out[i]) - ideal[i]));
  EXPECT_LT(err, 0.8 * 0.01);
  // Upsampling too.
  const auto up = resample(sine(440, 8000, 8000), 8000, 16000);
  ASSERT_EQ(up.size(), 16000u);
  EXPECT_NEAR(amplitude_at(up, 440, 16000), 0.8, 0.8 * 0.005);
}

TEST(ResampleTest, RemovesWhatTheNewRateCannotHold) {
  // 7.5 kHz cannot exist at 8 kHz (Nyquist 4 kHz): without the low-pass it would alias to 500 Hz.
  const auto out = resample(sine(7500, 22050, 22050), 22050, 8000);
  EXPECT_LT(rms(out), 0.8 * 0.01);
  EXPECT_LT(amplitude_at(out, 500, 8000), 0.8 * 0.01);
}

TEST(ResampleTest, RatesWithoutASmallCommonStepKeepASineToo) {
  // 44,101 Hz to 16 kHz: 16,000 phases, more than the polyphase table holds; the weights are
  // then computed per output sample, by the same filter.
  const auto out = resample(sine(1000, 44101, 44101), 44101, 16000);
  ASSERT_EQ(out.size(), 16000u);
  EXPECT_NEAR(amplitude_at(out, 1000, 16000), 0.8, 0.8 * 0.005);
  const auto tabled = resample(sine(1000, 44100, 44100), 44100, 16000);
  ASSERT_EQ(tabled.size(), 16000u);
  EXPECT_NEAR(amplitude_at(tabled, 1000, 16000), 0.8, 0.8 * 0.005);
}

TEST(ResampleTest, SameRateIsTheIdentityAndBadRatesThrow) {
  const auto in = sine(300, 16000, 100);
  EXPECT_EQ(resample(in, 16000, 16000), in);
  EXPECT_THROW(resample(in, 0, 16000), std::invalid_argument);
  EXPECT_THROW(resample(in, 16000, -1), std::invalid_argument);
}

TEST(DecodeAudioTest, MixesDownResamplesAndCuts) {
  test::TempDir dir;
  const auto path = (dir.path() / "stereo.wav").string();
  // Left: 1 kHz; right: silence. Mono is their mean: 1 kHz at half the amplitude.
  write_wav(path, {sine(1000, 44100, 44100 * 2), std::vector<float>(44100 * 2, 0.0f)}, 44100);
  AudioOptions options;
  options.sample_rate = 16000;
  options.max_seconds = 1.5;
  const auto audio = decode_audio_file(path, options);
  EXPECT_EQ(audio.sample_rate, 16000);
  EXPECT_EQ(audio.samples.size(), 24000u);  // cut to 1.5 s
  EXPECT_NEAR(amplitude_at(audio.samples, 1000, 16000), 0.4, 0.4 * 0.01);
}

TEST(DecodeAudioTest, EachBadFileIsADataErrorNamingIt) {
  test::TempDir dir;
  const auto expect_error = [&](const std::string& name, const std::string& what) {
    const auto path = (dir.path() / name).string();
    try {
      decode_audio_file(path, AudioOptions{});
      ADD_FAILURE() << name << ": no error";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << name << ": " << e.what();
    }
  };
  expect_error("missing.wav", "audio file not found");
  std::ofstream((dir.path() / "empty.wav").string());
  expect_error("empty.wav", "audio file is empty");
  std::ofstream((dir.path() / "text.wav").string()) << "this is not audio at all, just some text\n";
  expect_error("text.wav", "not an audio file");
  write_wav((dir.path() / "rate0.wav").string(), {sine(440, 16000, 1600)}, 16000, /*rate_in_header=*/0);
  expect_error("rate0.wav", "sample rate of 0");
  // A header claiming 2^31 bytes of samples: hours of audio in a file of a few kilobytes.
  write_wav((dir.path() / "hours.wav").string(), {sine(440, 8000, 800)}, 8000, -1, int64_t(1) << 31);
  expect_error("hours.wav", "cut short");
  // A file cut in the middle of its samples.
  write_wav((dir.path() / "cut.wav").string(), {sine(440, 8000, 800)}, 8000, -1, 3200);
  expect_error("cut.wav", "cut short");
  // A true header of more seconds than max_file_seconds allows: refused before decoding.
  write_wav((dir.path() / "long.wav").string(), {sine(440, 8000, 8000)}, 8000);
  AudioOptions strict;
  strict.max_seconds = 0.5;
  strict.max_file_seconds = 0.5;
  try {
    decode_audio_file((dir.path() / "long.wav").string(), strict);
    ADD_FAILURE() << "long.wav: no error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("refused as corrupt"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mmintent
