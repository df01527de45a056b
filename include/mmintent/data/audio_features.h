#pragma once
/// Log-mel filterbank features of decoded clips (data/audio.h), per-utterance normalisation and
/// SpecAugment. The FFT is FFTW's (single precision), planned once per extractor and run from
/// any thread: the loader's workers compute features without LibTorch's thread pool, whose
/// OpenMP teams would compete with the training step's for the cores. Only the standard
/// library here.

#include "mmintent/data/audio.h"
#include "mmintent/data/augment.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace mmintent {

/// HTK's mel scale: 2595 log10(1 + hz / 700), and its inverse.
double hz_to_mel(double hz);
double mel_to_hz(double mel);

/// Triangular filters [n_mels x (n_fft/2 + 1)], row-major: n_mels + 2 points equally spaced on
/// the mel scale from f_min to f_max (Hz); filter m rises from point m to 1 at point m+1 and
/// falls to 0 at point m+2, evaluated at the FFT bins' frequencies k * sample_rate / n_fft
/// (no area normalisation: torchaudio's melscale_fbanks with mel_scale "htk", norm None).
/// Throws std::invalid_argument for n_mels < 1, n_fft < 2, f_min < 0 or f_max <= f_min.
std::vector<float> mel_filterbank(int64_t n_mels, int64_t n_fft, int64_t sample_rate,
                                  double f_min, double f_max);

/// Computes log-mel features with fixed settings (data.audio): frames of `window` samples
/// (Hann, periodic) every `hop` samples, zero-padded to `n_fft` (the next power of two) around
/// the window's centre; the clip is padded with n_fft/2 zeros on each side, so it has
/// 1 + samples / hop frames, frame t centred on sample t * hop. Each value is
/// log(mel energy + 1e-6) of the power spectrum |X|^2, raised to a floor 80 dB (ln 1e8) under
/// the clip's loudest value (as librosa's power_to_db with top_db 80).
class LogMelExtractor {
 public:
  /// Throws Error for options validate() refuses.
  explicit LogMelExtractor(const AudioOptions& options);
  ~LogMelExtractor();
  LogMelExtractor(const LogMelExtractor&) = delete;
  LogMelExtractor& operator=(const LogMelExtractor&) = delete;

  int64_t n_mels() const { return n_mels_; }
  int64_t n_fft() const { return n_fft_; }
  int64_t window() const { return window_; }
  int64_t hop() const { return hop_; }
  /// Frames of a clip of `samples` samples.
  int64_t frames(int64_t samples) const { return 1 + samples / hop_; }
  /// frames(n) x n_mels values, frame-major. Thread-safe.
  std::vector<float> compute(const float* samples, int64_t n) const;
  /// The filters (mel_filterbank's layout).
  const std::vector<float>& filterbank() const { return filterbank_; }

 private:
  int64_t sample_rate_, n_mels_, n_fft_, window_, hop_;
  std::vector<float> hann_;        ///< window_ values
  std::vector<float> filterbank_;  ///< dense, for filterbank()
  /// Each filter's non-zero bins: first bin and weights.
  std::vector<std::pair<int64_t, std::vector<float>>> sparse_;
  void* plan_ = nullptr;  ///< fftwf_plan (kept out of the header)
};

/// Each band of `features` [frames x n_mels] to zero mean and unit variance over the frames
/// (a band with (near) zero variance only centred).
void normalize_utterance(float* features, int64_t frames, int64_t n_mels);

/// SpecAugment in place: options.time_masks time masks and options.freq_masks band masks, each
/// of a width drawn uniformly from [0, max] and a uniform position, set to the features' mean.
/// Deterministic from `seed` (derive it from seed, epoch and sample: core/seed.h's mix_seed).
void spec_augment(float* features, int64_t frames, int64_t n_mels, const SpecAugmentOptions& options,
                  uint64_t seed);

}  // namespace mmintent
