#include "support/audio.h"

#include <algorithm>
#include <cmath>
#include <fstream>

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

}  // namespace mmintent::test
