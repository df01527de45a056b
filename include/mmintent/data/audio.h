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
  /// The manifest field (JSON key or CSV/TSV column) holding each record's audio file path
  /// (relative paths are resolved against the manifest's folder).
  std::string field = "audio";
  int64_t sample_rate = 16000;  ///< every clip is resampled to this rate (Hz)
  double max_seconds = 10.0;    ///< longer clips are cut to this length, as text to max_length
  /// Files whose header claims more than this many seconds are refused before anything is
  /// decoded (a corrupt or hostile header), whatever max_seconds cuts to.
  double max_file_seconds = 3600.0;
  // Features: log-mel filterbanks (data/audio_features.h), computed in the loader's workers.
  int64_t n_mels = 64;        ///< mel bands
  double window_ms = 25.0;    ///< analysis window (Hann)
  double hop_ms = 10.0;       ///< step between frames
  double f_min = 20.0;        ///< lowest filter edge (Hz)
  double f_max = 0.0;         ///< highest filter edge (Hz); 0 = sample_rate / 2
  /// "utterance": each utterance's bands to zero mean and unit variance over its frames;
  /// "global": each band with the training set's mean and standard deviation, fitted before
  /// training and kept in the model (the reader gives raw values; models/audio_encoder.h);
  /// "none": raw log-mel values.
  std::string normalize = "utterance";
  /// Decode every clip once up front and keep it in memory (16-bit samples: 32 kB per second
  /// at 16 kHz); false: decode per batch (every file is still checked once up front).
  bool cache = true;
};

/// Throws Error naming the key for values out of range (sample_rate, max_seconds,
/// max_file_seconds, n_mels, window_ms, hop_ms, f_min/f_max, normalize).
void validate(const AudioOptions& options);

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

/// decode_audio_file for a file's bytes in memory (e.g. a served request's upload); `name`
/// stands for the file in messages.
DecodedAudio decode_audio_bytes(const std::string& bytes, const std::string& name, const AudioOptions& options);

/// Writes `audio` (mono, samples clipped to [-1, 1]) as a 16-bit PCM WAV file at
/// audio.sample_rate, to a temporary file renamed into place. Throws DataError(path, 0, ...) when
/// it cannot be written.
void write_wav_file(const std::string& path, const DecodedAudio& audio);

/// Resamples mono `input` from `from_rate` to `to_rate` Hz with a windowed-sinc (Kaiser)
/// low-pass at the lower of the two Nyquist frequencies; the output has
/// round(size * to_rate / from_rate) samples. Throws std::invalid_argument on a rate <= 0.
std::vector<float> resample(const std::vector<float>& input, int64_t from_rate, int64_t to_rate);

}  // namespace mmintent
