#include "support/audio.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

namespace mmintent::test {

std::vector<float> sine(double hz, int64_t rate, int64_t n, double amplitude) {
  constexpr double kPi = 3.14159265358979323846;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    x[static_cast<size_t>(i)] = float(amplitude * std::sin(2 * kPi * hz * double(i) / double(rate)));
  }
  return x;
}

void write_wav(const std::string& path, const std::vector<std::vector<float>>& channels, int32_t rate,
               int64_t rate_in_header, int64_t data_bytes_in_header) {
  const auto c = static_cast<int16_t>(channels.size());
  const auto frames = channels[0].size();
  std::string data;
  for (size_t f = 0; f < frames; ++f) {
    for (const auto& ch : channels) {
      const auto v = static_cast<int16_t>(std::lround(std::clamp(ch[f], -1.0f, 1.0f) * 32767));
      data.append(reinterpret_cast<const char*>(&v), 2);
    }
  }
  auto u32 = [](uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [](uint16_t v) { return std::string(reinterpret_cast<const char*>(&v), 2); };
  const auto header_rate = static_cast<uint32_t>(rate_in_header >= 0 ? rate_in_header : rate);
  const auto data_size =
      static_cast<uint32_t>(data_bytes_in_header >= 0 ? data_bytes_in_header : int64_t(data.size()));
  std::string wav = "RIFF" + u32(36 + data_size) + "WAVE" + "fmt " + u32(16) + u16(1) +
                    u16(uint16_t(c)) + u32(header_rate) + u32(header_rate * 2 * uint32_t(c)) +
                    u16(uint16_t(2 * c)) + u16(16) + "data" + u32(data_size) + data;
  std::ofstream(path, std::ios::binary) << wav;
}

namespace fs = std::filesystem;

namespace {
const std::vector<std::string> kIntents{"low", "mid", "high"};
const std::vector<double> kBandHz{300, 900, 2400};
}  // namespace

const std::vector<std::string>& tone_intents() { return kIntents; }

std::vector<float> tone(int k, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  const double hz = kBandHz[k] * (0.85 + 0.3 * u(rng));
  const auto n = static_cast<int64_t>(8000 * (0.3 + 0.6 * u(rng)));
  auto x = sine(hz, 8000, n, 0.2 + 0.6 * u(rng));
  std::normal_distribution<float> noise(0.f, 0.02f);
  for (auto& v : x) v += noise(rng);
  return x;
}

namespace {

std::string write_tone_split(const fs::path& root, const std::string& split, int n, unsigned seed) {
  std::mt19937 rng(seed);
  fs::create_directories(root / "data" / "wav");
  std::ofstream out(root / "data" / (split + ".jsonl"));
  for (int i = 0; i < n; ++i) {
    const int k = i % 3;
    const std::string name = split + "_" + std::to_string(i) + ".wav";
    const auto x = tone(k, rng);
    if (i % 4 == 0) {
      write_wav((root / "data" / "wav" / name).string(), {x, x}, 8000);  // stereo
    } else {
      write_wav((root / "data" / "wav" / name).string(), {x}, 8000);
    }
    out << nlohmann::json{{"audio", "wav/" + name}, {"label", kIntents[k]}}.dump() << "\n";
  }
  return (root / "data" / (split + ".jsonl")).string();
}

const char* kToneConfig = R"(runtime: {device: cpu, threads: 2, seed: 5}
data:
  train: data/train.jsonl
  val: data/val.jsonl
  test: data/test.jsonl
  audio: {n_mels: 32, max_seconds: 2}
  augment:
    enabled: true
    spec_augment: {time_masks: 1, time_width: 5, freq_masks: 1, freq_width: 3}
  loader: {batch_size: 8, eval_batch_size: 32, num_workers: 1}
model:
  modalities: [audio]
  audio_encoder: {channels: 4, hidden_size: 16, num_layers: 1}
  head: {hidden: [16], dropout: 0.0}
train:
  epochs: 12
  optimizer: {type: adamw, lr: 0.01, weight_decay: 0.0}
  scheduler: {type: constant}
  progress: lines
eval:
  splits: [val, test]
output: {dir: OUTPUT_DIR}
)";


}  // namespace

std::string write_tone_fixture(const fs::path& root, const std::string& output_dir) {
  write_tone_split(root, "train", 60, 1);
  write_tone_split(root, "val", 24, 2);
  write_tone_split(root, "test", 30, 3);
  std::string config = kToneConfig;
  config.replace(config.find("OUTPUT_DIR"), 10, output_dir);
  const auto path = (root / "audio.yaml").string();
  std::ofstream(path) << config;
  return path;
}

}  // namespace mmintent::test
