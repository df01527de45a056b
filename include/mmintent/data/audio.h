#pragma once
/// Audio decoding (libsndfile: WAV, FLAC, OGG and the rest it reads), mono mix-down, resampling
/// and length limits. libsndfile stays inside audio.cpp; this header needs only the standard
/// library.

#include <cstdint>
#include <string>
#include <vector>

namespace mmintent {

/// How audio is read for the model (`data.audio` in the config).
struct AudioOptions {
  int64_t sample_rate = 16000;  ///< every clip is resampled to this rate (Hz)
  double max_seconds = 10.0;    ///< longer clips are cut to this length, as text to max_length
  /// Files whose header claims more than this many seconds are refused before anything is
  /// decoded (a corrupt or hostile header), whatever max_seconds cuts to.
  double max_file_seconds = 3600.0;
};

/// A decoded clip: mono float samples in [-1, 1] at `sample_rate`.
struct DecodedAudio {
  int64_t sample_rate = 0;
  std::vector<float> samples;
  double seconds() const { return sample_rate > 0 ? double(samples.size()) / double(sample_rate) : 0.0; }
};

/// Reads `path`, mixes its channels down to mono, resamples to options.sample_rate and cuts
/// it to options.max_seconds. Throws DataError(path, 0, ...) naming what is wrong: a missing
/// or empty file, one that is not audio libsndfile reads, a header with a sample rate of 0,
/// no channels or absurdly many frames, or a file cut short.
DecodedAudio decode_audio_file(const std::string& path, const AudioOptions& options);

/// Resamples mono `input` from `from_rate` to `to_rate` Hz with a windowed-sinc (Kaiser)
/// low-pass at the lower of the two Nyquist frequencies; the output has
/// round(size * to_rate / from_rate) samples. Throws std::invalid_argument on a rate <= 0.
std::vector<float> resample(const std::vector<float>& input, int64_t from_rate, int64_t to_rate);

}  // namespace mmintent
