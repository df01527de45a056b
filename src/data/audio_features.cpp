#include "mmintent/data/audio_features.h"

#include "mmintent/error.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>

namespace mmintent {
namespace {

constexpr double kPi = 3.14159265358979323846;
const float kTopDecibelsLog = static_cast<float>(std::log(1e8));  // 80 dB of power, as a natural log

/// FFTW's planner is not thread-safe (its execution is): every plan is made and destroyed
/// under this lock.
std::mutex& planner_mutex() {
  static std::mutex m;
  return m;
}

struct FftwBuffer {  // FFTW's SIMD-aligned memory, as the plan was made with
  explicit FftwBuffer(size_t bytes) : p(fftwf_malloc(bytes)) {
    if (!p) throw std::bad_alloc();
  }
  ~FftwBuffer() { fftwf_free(p); }
  FftwBuffer(const FftwBuffer&) = delete;
  FftwBuffer& operator=(const FftwBuffer&) = delete;
  void* p;
};

uint64_t draw(std::mt19937_64& rng, uint64_t n) { return n == 0 ? 0 : rng() % n; }

}  // namespace

double hz_to_mel(double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); }
double mel_to_hz(double mel) { return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0); }

std::vector<float> mel_filterbank(int64_t n_mels, int64_t n_fft, int64_t sample_rate, double f_min,
                                  double f_max) {
  if (n_mels < 1 || n_fft < 2 || sample_rate <= 0 || f_min < 0 || !(f_max > f_min)) {
    throw std::invalid_argument("mel_filterbank: need n_mels >= 1, n_fft >= 2, sample_rate > 0 and "
                                "0 <= f_min < f_max");
  }
  const int64_t bins = n_fft / 2 + 1;
  const double lo = hz_to_mel(f_min), hi = hz_to_mel(f_max);
  std::vector<double> points(static_cast<size_t>(n_mels + 2));
  for (int64_t i = 0; i < n_mels + 2; ++i) {
    points[i] = mel_to_hz(lo + (hi - lo) * double(i) / double(n_mels + 1));
  }
  std::vector<float> fb(static_cast<size_t>(n_mels * bins), 0.f);
  for (int64_t m = 0; m < n_mels; ++m) {
    const double left = points[m], centre = points[m + 1], right = points[m + 2];
    for (int64_t k = 0; k < bins; ++k) {
      const double f = double(k) * double(sample_rate) / double(n_fft);
      const double up = (f - left) / (centre - left), down = (right - f) / (right - centre);
      fb[static_cast<size_t>(m * bins + k)] = static_cast<float>(std::max(0.0, std::min(up, down)));
    }
  }
  return fb;
}

LogMelExtractor::LogMelExtractor(const AudioOptions& options) {
  validate(options);
  sample_rate_ = options.sample_rate;
  n_mels_ = options.n_mels;
  window_ = std::max<int64_t>(2, std::llround(options.window_ms * 1e-3 * double(sample_rate_)));
  hop_ = std::max<int64_t>(1, std::llround(options.hop_ms * 1e-3 * double(sample_rate_)));
  n_fft_ = 2;
  while (n_fft_ < window_) n_fft_ *= 2;
  hann_.resize(static_cast<size_t>(window_));
  for (int64_t i = 0; i < window_; ++i) {
    hann_[i] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * kPi * double(i) / double(window_)));
  }
  const double f_max = options.f_max > 0 ? options.f_max : double(sample_rate_) / 2.0;
  filterbank_ = mel_filterbank(n_mels_, n_fft_, sample_rate_, options.f_min, f_max);
  const int64_t bins = n_fft_ / 2 + 1;
  for (int64_t m = 0; m < n_mels_; ++m) {
    const float* row = filterbank_.data() + m * bins;
    int64_t first = 0, last = bins - 1;
    while (first < bins && row[first] == 0.f) ++first;
    while (last >= first && row[last] == 0.f) --last;
    // A filter narrower than the bins' spacing has no bin inside it: it stays 0.
    sparse_.emplace_back(first, std::vector<float>(row + first, row + std::max(first, last + 1)));
  }
  std::lock_guard<std::mutex> lock(planner_mutex());
  FftwBuffer in(sizeof(float) * static_cast<size_t>(n_fft_));
  FftwBuffer out(sizeof(fftwf_complex) * static_cast<size_t>(bins));
  plan_ = fftwf_plan_dft_r2c_1d(static_cast<int>(n_fft_), static_cast<float*>(in.p),
                                static_cast<fftwf_complex*>(out.p), FFTW_ESTIMATE);
  if (!plan_) throw Error("FFTW could not plan a real FFT of " + std::to_string(n_fft_) + " points");
}

LogMelExtractor::~LogMelExtractor() {
  std::lock_guard<std::mutex> lock(planner_mutex());
  fftwf_destroy_plan(static_cast<fftwf_plan>(plan_));
}

std::vector<float> LogMelExtractor::compute(const float* samples, int64_t n) const {
  const int64_t T = frames(n), bins = n_fft_ / 2 + 1;
  std::vector<float> out(static_cast<size_t>(T * n_mels_));
  FftwBuffer in_buf(sizeof(float) * static_cast<size_t>(n_fft_));
  FftwBuffer out_buf(sizeof(fftwf_complex) * static_cast<size_t>(bins));
  auto* in = static_cast<float*>(in_buf.p);
  auto* spec = static_cast<fftwf_complex*>(out_buf.p);
  std::vector<float> power(static_cast<size_t>(bins));
  // Frame t covers samples [t*hop - n_fft/2, t*hop + n_fft/2) of the clip (zeros outside it);
  // the window sits in the middle of the n_fft points.
  const int64_t pad = (n_fft_ - window_) / 2;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t start = t * hop_ - n_fft_ / 2;
    std::fill(in, in + n_fft_, 0.f);
    for (int64_t i = 0; i < window_; ++i) {
      const int64_t s = start + pad + i;
      if (s >= 0 && s < n) in[pad + i] = samples[s] * hann_[i];
    }
    fftwf_execute_dft_r2c(static_cast<fftwf_plan>(plan_), in, spec);
    for (int64_t k = 0; k < bins; ++k) power[k] = spec[k][0] * spec[k][0] + spec[k][1] * spec[k][1];
    float* row = out.data() + t * n_mels_;
    for (int64_t m = 0; m < n_mels_; ++m) {
      const auto& [first, weights] = sparse_[static_cast<size_t>(m)];
      double e = 0;
      for (size_t j = 0; j < weights.size(); ++j) e += double(weights[j]) * power[first + j];
      row[m] = static_cast<float>(std::log(e + 1e-6));
    }
  }
  // A floor 80 dB under the utterance's loudest value: what lies below is numerical noise
  // (16-bit quantisation, the resampler's stop band), which normalisation would magnify.
  if (!out.empty()) {
    const float floor = *std::max_element(out.begin(), out.end()) - kTopDecibelsLog;
    for (auto& v : out) v = std::max(v, floor);
  }
  return out;
}

void normalize_utterance(float* features, int64_t frames, int64_t n_mels) {
  if (frames <= 0) return;
  for (int64_t m = 0; m < n_mels; ++m) {
    double sum = 0, sq = 0;
    for (int64_t t = 0; t < frames; ++t) sum += features[t * n_mels + m];
    const double mean = sum / double(frames);
    for (int64_t t = 0; t < frames; ++t) {
      const double d = features[t * n_mels + m] - mean;
      sq += d * d;
    }
    const double sd = std::sqrt(sq / double(frames));
    const double scale = sd > 1e-5 ? 1.0 / sd : 1.0;
    for (int64_t t = 0; t < frames; ++t) {
      features[t * n_mels + m] = static_cast<float>((features[t * n_mels + m] - mean) * scale);
    }
  }
}

void spec_augment(float* features, int64_t frames, int64_t n_mels, const SpecAugmentOptions& o,
                  uint64_t seed) {
  if (frames <= 0 || n_mels <= 0) return;
  double sum = 0;
  for (int64_t i = 0; i < frames * n_mels; ++i) sum += features[i];
  const auto mean = static_cast<float>(sum / double(frames * n_mels));
  std::mt19937_64 rng(seed);
  const int64_t max_time = std::min<int64_t>(
      o.time_width, static_cast<int64_t>(std::floor(o.max_time_ratio * double(frames))));
  for (int64_t k = 0; k < o.time_masks; ++k) {
    const auto width = static_cast<int64_t>(draw(rng, static_cast<uint64_t>(std::max<int64_t>(0, max_time)) + 1));
    const auto start = static_cast<int64_t>(draw(rng, static_cast<uint64_t>(frames - width) + 1));
    std::fill(features + start * n_mels, features + (start + width) * n_mels, mean);
  }
  const int64_t max_freq = std::min(o.freq_width, n_mels);
  for (int64_t k = 0; k < o.freq_masks; ++k) {
    const auto width = static_cast<int64_t>(draw(rng, static_cast<uint64_t>(std::max<int64_t>(0, max_freq)) + 1));
    const auto start = static_cast<int64_t>(draw(rng, static_cast<uint64_t>(n_mels - width) + 1));
    for (int64_t t = 0; t < frames; ++t) {
      std::fill(features + t * n_mels + start, features + t * n_mels + start + width, mean);
    }
  }
}

}  // namespace mmintent
