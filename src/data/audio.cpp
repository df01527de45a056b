#include "mmintent/data/audio.h"

#include "mmintent/error.h"

#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>

namespace mmintent {
namespace fs = std::filesystem;

namespace {

constexpr double kPi = 3.14159265358979323846;

/// The zeroth-order modified Bessel function of the first kind (for the Kaiser window).
double bessel_i0(double x) {
  double sum = 1.0, term = 1.0;
  for (int k = 1; k < 50; ++k) {
    term *= (x / (2.0 * k)) * (x / (2.0 * k));
    sum += term;
    if (term < 1e-12 * sum) break;
  }
  return sum;
}

}  // namespace

std::vector<float> resample(const std::vector<float>& input, int64_t from_rate, int64_t to_rate) {
  if (from_rate <= 0 || to_rate <= 0) {
    throw std::invalid_argument("resample: rates must be > 0, got " + std::to_string(from_rate) +
                                " and " + std::to_string(to_rate));
  }
  if (from_rate == to_rate || input.empty()) return input;
  const double ratio = double(to_rate) / double(from_rate);
  const auto out_size = static_cast<int64_t>(std::llround(double(input.size()) * ratio));
  // Low-pass at the lower Nyquist frequency, a little inside it (0.95) so that the
  // transition band stays below it; 32 zero crossings on each side, Kaiser beta 8.6
  // (about 80 dB stop-band attenuation).
  const double cutoff = 0.95 * std::min(1.0, ratio);  // in units of the input's Nyquist
  constexpr int kZeroCrossings = 32;
  constexpr double kBeta = 8.6;
  const double half_width = kZeroCrossings / cutoff;  // in input samples
  const double i0_beta = bessel_i0(kBeta);
  const auto n = static_cast<int64_t>(input.size());
  std::vector<float> out(static_cast<size_t>(out_size));
  for (int64_t j = 0; j < out_size; ++j) {
    const double centre = double(j) / ratio;  // position in input samples
    const auto first = static_cast<int64_t>(std::ceil(centre - half_width));
    const auto last = static_cast<int64_t>(std::floor(centre + half_width));
    double acc = 0.0;
    for (int64_t i = std::max<int64_t>(first, 0); i <= std::min(last, n - 1); ++i) {
      const double t = double(i) - centre;
      const double x = cutoff * t;
      const double sinc = std::abs(x) < 1e-12 ? 1.0 : std::sin(kPi * x) / (kPi * x);
      const double r = t / half_width;
      const double window = std::abs(r) >= 1.0 ? 0.0 : bessel_i0(kBeta * std::sqrt(1.0 - r * r)) / i0_beta;
      acc += double(input[static_cast<size_t>(i)]) * cutoff * sinc * window;
    }
    out[static_cast<size_t>(j)] = static_cast<float>(acc);
  }
  return out;
}

DecodedAudio decode_audio_file(const std::string& path, const AudioOptions& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw DataError(path, 0, "audio file not found");
  if (!fs::is_regular_file(path, ec)) throw DataError(path, 0, "audio path is not a regular file");
  if (fs::file_size(path, ec) == 0) throw DataError(path, 0, "audio file is empty");
  SF_INFO info{};
  std::unique_ptr<SNDFILE, int (*)(SNDFILE*)> file(sf_open(path.c_str(), SFM_READ, &info), &sf_close);
  if (!file) {
    throw DataError(path, 0, std::string("not an audio file libsndfile reads (") + sf_strerror(nullptr) + ")");
  }
  // libsndfile reads a file whose header claims more samples than it holds as far as they go,
  // and says so only in its log ("data : 3200 (should be 1600)"): a cut-short file is refused.
  {
    char log[4096] = {0};
    sf_command(file.get(), SFC_GET_LOG_INFO, log, sizeof log);
    const std::string text(log);
    for (size_t at = text.find("data :"); at != std::string::npos; at = text.find("data :", at + 1)) {
      if (at != 0 && text[at - 1] != '\n') continue;
      const auto end = text.find('\n', at);
      const std::string line = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
      if (line.find("(should be") != std::string::npos) {
        throw DataError(path, 0, "audio file is cut short: its header and its size disagree (" + line + ")");
      }
    }
  }
  if (info.samplerate <= 0) {
    throw DataError(path, 0, "audio header gives a sample rate of " + std::to_string(info.samplerate));
  }
  if (info.channels <= 0 || info.channels > 64) {
    throw DataError(path, 0, "audio header gives " + std::to_string(info.channels) + " channels");
  }
  const double claimed = double(info.frames) / double(info.samplerate);
  if (info.frames < 0 || claimed > options.max_file_seconds) {
    throw DataError(path, 0, "audio header claims " + std::to_string(claimed) + " s (more than " +
                                 std::to_string(options.max_file_seconds) + " s): refused as corrupt");
  }
  // Read at most what max_seconds keeps, at the file's rate (plus the resampler's margin).
  const auto keep = std::min<sf_count_t>(
      info.frames, static_cast<sf_count_t>(std::ceil(options.max_seconds * info.samplerate)) + 64);
  std::vector<float> interleaved(static_cast<size_t>(keep) * static_cast<size_t>(info.channels));
  const sf_count_t got = sf_readf_float(file.get(), interleaved.data(), keep);
  if (got < keep) {
    throw DataError(path, 0, "audio file is cut short: its header gives " + std::to_string(info.frames) +
                                 " frames, " + std::to_string(got) + " could be read");
  }
  std::vector<float> mono(static_cast<size_t>(got));
  for (sf_count_t f = 0; f < got; ++f) {
    double sum = 0;
    for (int c = 0; c < info.channels; ++c) sum += interleaved[static_cast<size_t>(f * info.channels + c)];
    mono[static_cast<size_t>(f)] = static_cast<float>(sum / info.channels);
  }
  DecodedAudio out;
  out.sample_rate = options.sample_rate;
  out.samples = resample(mono, info.samplerate, options.sample_rate);
  const auto max_samples = static_cast<size_t>(std::llround(options.max_seconds * double(options.sample_rate)));
  if (out.samples.size() > max_samples) out.samples.resize(max_samples);
  return out;
}

}  // namespace mmintent
