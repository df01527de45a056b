#pragma once
/// Speech synthesis with espeak-ng's library, in this process: the spoken data sets' voices.
/// espeak-ng keeps its state in globals, so one synthesis runs at a time (under a lock); the
/// first call initialises it. Internal to libmmintent.

#include <cstdint>
#include <string>
#include <vector>

namespace mmintent::detail {

class Espeak {
 public:
  /// The process's synthesiser. Throws Error when espeak-ng's data cannot be loaded.
  static Espeak& instance();
  /// The rate of what speak() returns (espeak-ng: 22,050 Hz).
  int64_t sample_rate() const { return sample_rate_; }
  /// espeak-ng's voice variants ("m3", "f2", "whisper", ...: the files of espeak-ng-data/voices/!v),
  /// sorted.
  const std::vector<std::string>& variants() const { return variants_; }
  /// `text` spoken by `voice` ("en-us", or with a variant "en-us+m3") at `rate` words per
  /// minute (80-450) and `pitch` (0-100, 50 normal): mono samples in [-1, 1]. Throws Error
  /// naming the voice when espeak-ng does not know it, or when synthesis fails.
  std::vector<float> speak(const std::string& text, const std::string& voice, int rate, int pitch);

 private:
  Espeak();
  int64_t sample_rate_ = 0;
  std::vector<std::string> variants_;
};

}  // namespace mmintent::detail
