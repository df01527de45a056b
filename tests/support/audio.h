#pragma once
/// Audio for tests: sines and 16-bit PCM WAV files written byte by byte (no libsndfile), so
/// the reader is checked against an independent writer.

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace mmintent::test {

/// n samples of amplitude * sin(2 pi hz t) at `rate`.
std::vector<float> sine(double hz, int64_t rate, int64_t n, double amplitude = 0.8);

/// A 16-bit PCM WAV file of the given channels (equal lengths); `rate_in_header` and
/// `data_bytes_in_header` (when >= 0) replace the true values in the header, to write bad files.
void write_wav(const std::string& path, const std::vector<std::vector<float>>& channels, int32_t rate,
               int64_t rate_in_header = -1, int64_t data_bytes_in_header = -1);

/// The intents of the tone fixture, "low", "mid", "high", and their pitch bands (300, 900,
/// 2400 Hz).
const std::vector<std::string>& tone_intents();
/// A tone of intent k: its band's pitch +-15%, 0.3-0.9 s, amplitude 0.2-0.8, white noise; 8 kHz.
std::vector<float> tone(int k, std::mt19937& rng);

/// A tiny spoken-intent set: root/data/{train,val,test}.jsonl (60 / 24 / 30 tones, intents in
/// turn, every 4th file stereo; 8 kHz WAV files under root/data/wav/) and root/audio.yaml, an
/// audio-only config (12 epochs, SpecAugment) writing into `output_dir`. Returns the config's
/// path.
std::string write_tone_fixture(const std::filesystem::path& root, const std::string& output_dir);

}  // namespace mmintent::test
