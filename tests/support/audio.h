#pragma once
/// Audio for tests: sines and 16-bit PCM WAV files written byte by byte (no libsndfile), so
/// the reader is checked against an independent writer.

#include <cstdint>
#include <string>
#include <vector>

namespace mmintent::test {

/// n samples of amplitude * sin(2 pi hz t) at `rate`.
std::vector<float> sine(double hz, int64_t rate, int64_t n, double amplitude = 0.8);

/// A 16-bit PCM WAV file of the given channels (equal lengths); `rate_in_header` and
/// `data_bytes_in_header` (when >= 0) replace the true values in the header, to write bad files.
void write_wav(const std::string& path, const std::vector<std::vector<float>>& channels, int32_t rate,
               int64_t rate_in_header = -1, int64_t data_bytes_in_header = -1);

}  // namespace mmintent::test
