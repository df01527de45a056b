#include "mmintent/data/audio.h"

#include "mmintent/error.h"

#include <sndfile.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
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

/// For a file libsndfile refuses: what is wrong with a RIFF/WAVE header, when its "fmt " chunk
/// gives no channels or a sample rate of 0 (libsndfile only says its SF_INFO is incomplete).
std::string wav_header_problem(const std::string& head) {
  if (head.size() < 12 || head.compare(0, 4, "RIFF") != 0 || head.compare(8, 4, "WAVE") != 0) return "";
  auto u16 = [&](size_t at) { return unsigned(uint8_t(head[at])) | unsigned(uint8_t(head[at + 1])) << 8; };
  auto u32 = [&](size_t at) { return uint32_t(u16(at)) | uint32_t(u16(at + 2)) << 16; };
  for (size_t at = 12; at + 8 <= head.size();) {
    const uint32_t size = u32(at + 4);
    if (head.compare(at, 4, "fmt ") == 0 && at + 16 <= head.size()) {
      const unsigned channels = u16(at + 10);
      const uint32_t rate = at + 16 <= head.size() ? u32(at + 12) : 1;
      if (rate == 0) return "WAV header gives a sample rate of 0";
      if (channels == 0) return "WAV header gives 0 channels";
      return "";
    }
    at += 8 + size + (size & 1);
  }
  return "";
}

/// Checks an opened file's header and decodes it (mono, resampled, cut); `name` for messages.
DecodedAudio decode_open(SNDFILE* file, const SF_INFO& info, const std::string& name, const AudioOptions& options) {
  // libsndfile reads a file whose header claims more samples than it holds as far as they go,
  // and says so only in its log ("data : 3200 (should be 1600)"): a cut-short file is refused.
  {
    char log[4096] = {0};
    sf_command(file, SFC_GET_LOG_INFO, log, sizeof log);
    const std::string text(log);
    for (size_t at = text.find("data :"); at != std::string::npos; at = text.find("data :", at + 1)) {
      if (at != 0 && text[at - 1] != '\n') continue;
      const auto end = text.find('\n', at);
      const std::string line = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
      if (line.find("(should be") != std::string::npos) {
        throw DataError(name, 0, "audio file is cut short: its header and its size disagree (" + line + ")");
      }
    }
  }
  if (info.samplerate <= 0) {
    throw DataError(name, 0, "audio header gives a sample rate of " + std::to_string(info.samplerate));
  }
  if (info.channels <= 0 || info.channels > 64) {
    throw DataError(name, 0, "audio header gives " + std::to_string(info.channels) + " channels");
  }
  const double claimed = double(info.frames) / double(info.samplerate);
  if (info.frames < 0 || claimed > options.max_file_seconds) {
    throw DataError(name, 0, "audio header claims " + std::to_string(claimed) + " s (more than " +
                                 std::to_string(options.max_file_seconds) + " s): refused as corrupt");
  }
  // Read at most what max_seconds keeps, at the file's rate (plus the resampler's margin).
  const auto keep = std::min<sf_count_t>(
      info.frames, static_cast<sf_count_t>(std::ceil(options.max_seconds * info.samplerate)) + 64);
  std::vector<float> interleaved(static_cast<size_t>(keep) * static_cast<size_t>(info.channels));
  const sf_count_t got = sf_readf_float(file, interleaved.data(), keep);
  if (got < keep) {
    throw DataError(name, 0, "audio file is cut short: its header gives " + std::to_string(info.frames) +
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

}  // namespace

void validate(const AudioOptions& o) {
  auto fail = [](const std::string& key, const std::string& message) {
    throw Error("data.audio." + key + " " + message);
  };
  if (o.sample_rate < 1000 || o.sample_rate > 192000) fail("sample_rate", "must be in [1000, 192000] Hz, found " + std::to_string(o.sample_rate));
  if (!(o.max_seconds > 0 && o.max_seconds <= 3600)) fail("max_seconds", "must be in (0, 3600], found " + std::to_string(o.max_seconds));
  if (!(o.max_file_seconds >= o.max_seconds)) fail("max_file_seconds", "must be >= max_seconds");
  if (o.n_mels < 4 || o.n_mels > 512) fail("n_mels", "must be in [4, 512], found " + std::to_string(o.n_mels));
  if (!(o.window_ms >= 1 && o.window_ms <= 200)) fail("window_ms", "must be in [1, 200], found " + std::to_string(o.window_ms));
  if (!(o.hop_ms >= 1 && o.hop_ms <= o.window_ms)) fail("hop_ms", "must be in [1, window_ms], found " + std::to_string(o.hop_ms));
  const double nyquist = double(o.sample_rate) / 2;
  if (!(o.f_min >= 0 && o.f_min < nyquist)) fail("f_min", "must be in [0, sample_rate / 2), found " + std::to_string(o.f_min));
  if (!(o.f_max == 0 || (o.f_max > o.f_min && o.f_max <= nyquist))) {
    fail("f_max", "must be 0 (sample_rate / 2) or in (f_min, sample_rate / 2], found " + std::to_string(o.f_max));
  }
  if (o.normalize != "utterance" && o.normalize != "global" && o.normalize != "none") {
    fail("normalize", "must be utterance, global or none, found '" + o.normalize + "'");
  }
}

namespace {

// The resampler's low-pass: at the lower Nyquist frequency, a little inside it (0.95) so that
// the transition band stays below it; 32 zero crossings on each side, Kaiser beta 8.6 (about
// 80 dB stop-band attenuation).
constexpr int kZeroCrossings = 32;
constexpr double kBeta = 8.6;

struct LowPass {
  double cutoff;      ///< in units of the input's Nyquist frequency
  double half_width;  ///< in input samples
  double i0_beta;
  explicit LowPass(double ratio)
      : cutoff(0.95 * std::min(1.0, ratio)), half_width(kZeroCrossings / cutoff), i0_beta(bessel_i0(kBeta)) {}
  /// The filter's weight for an input sample `t` input samples from the output's position.
  double operator()(double t) const {
    const double x = cutoff * t;
    const double sinc = std::abs(x) < 1e-12 ? 1.0 : std::sin(kPi * x) / (kPi * x);
    const double r = t / half_width;
    const double window = std::abs(r) >= 1.0 ? 0.0 : bessel_i0(kBeta * std::sqrt(1.0 - r * r)) / i0_beta;
    return cutoff * sinc * window;
  }
};

/// For a rational ratio L/M (in lowest terms) the output positions j*M/L fall on L phases: the
/// weights of each phase, computed once, make each output sample one dot product.
struct Polyphase {
  int64_t L = 0, M = 0, taps = 0;
  std::vector<int64_t> first;  ///< per phase: first input offset from floor(j*M/L)
  std::vector<float> weights;  ///< L x taps
};

constexpr int64_t kMaxPhases = 8192;

std::shared_ptr<const Polyphase> polyphase(int64_t from_rate, int64_t to_rate) {
  static std::mutex mutex;
  static std::map<std::pair<int64_t, int64_t>, std::shared_ptr<const Polyphase>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[{from_rate, to_rate}];
  if (slot) return slot;
  const int64_t g = std::gcd(from_rate, to_rate);
  auto f = std::make_shared<Polyphase>();
  f->L = to_rate / g;
  f->M = from_rate / g;
  const LowPass low_pass(double(to_rate) / double(from_rate));
  f->taps = static_cast<int64_t>(std::floor(2 * low_pass.half_width)) + 2;
  f->first.resize(static_cast<size_t>(f->L));
  f->weights.assign(static_cast<size_t>(f->L * f->taps), 0.f);
  for (int64_t p = 0; p < f->L; ++p) {
    const double frac = double(p) / double(f->L);
    const auto k0 = static_cast<int64_t>(std::ceil(frac - low_pass.half_width));
    const auto k1 = static_cast<int64_t>(std::floor(frac + low_pass.half_width));
    f->first[p] = k0;
    for (int64_t k = k0; k <= k1 && k - k0 < f->taps; ++k) {
      f->weights[static_cast<size_t>(p * f->taps + (k - k0))] = static_cast<float>(low_pass(double(k) - frac));
    }
  }
  slot = f;
  return f;
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
  const auto n = static_cast<int64_t>(input.size());
  std::vector<float> out(static_cast<size_t>(out_size));
  if (to_rate / std::gcd(from_rate, to_rate) <= kMaxPhases) {
    const auto f = polyphase(from_rate, to_rate);
    for (int64_t j = 0; j < out_size; ++j) {
      const int64_t position = j * f->M;
      const int64_t p = position % f->L;
      const int64_t start = position / f->L + f->first[p];
      const float* w = f->weights.data() + p * f->taps;
      const int64_t q0 = std::max<int64_t>(0, -start), q1 = std::min<int64_t>(f->taps, n - start);
      double acc = 0.0;
      for (int64_t q = q0; q < q1; ++q) acc += double(w[q]) * double(input[static_cast<size_t>(start + q)]);
      out[static_cast<size_t>(j)] = static_cast<float>(acc);
    }
    return out;
  }
  // An irrational-looking ratio (more than kMaxPhases phases): the weights per output sample.
  const LowPass low_pass(ratio);
  for (int64_t j = 0; j < out_size; ++j) {
    const double centre = double(j) / ratio;  // position in input samples
    const auto first = static_cast<int64_t>(std::ceil(centre - low_pass.half_width));
    const auto last = static_cast<int64_t>(std::floor(centre + low_pass.half_width));
    double acc = 0.0;
    for (int64_t i = std::max<int64_t>(first, 0); i <= std::min(last, n - 1); ++i) {
      acc += double(input[static_cast<size_t>(i)]) * low_pass(double(i) - centre);
    }
    out[static_cast<size_t>(j)] = static_cast<float>(acc);
  }
  return out;
}

void write_wav_file(const std::string& path, const DecodedAudio& audio) {
  if (audio.sample_rate <= 0) throw DataError(path, 0, "cannot write audio at a sample rate of " + std::to_string(audio.sample_rate));
  const std::string tmp = path + ".tmp";
  SF_INFO info{};
  info.samplerate = static_cast<int>(audio.sample_rate);
  info.channels = 1;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  {
    std::unique_ptr<SNDFILE, int (*)(SNDFILE*)> file(sf_open(tmp.c_str(), SFM_WRITE, &info), &sf_close);
    if (!file) throw DataError(path, 0, std::string("cannot create the audio file: ") + sf_strerror(nullptr));
    std::vector<float> clipped(audio.samples.size());
    for (size_t i = 0; i < clipped.size(); ++i) clipped[i] = std::clamp(audio.samples[i], -1.0f, 1.0f);
    const auto n = static_cast<sf_count_t>(clipped.size());
    if (sf_writef_float(file.get(), clipped.data(), n) != n) {
      const std::string why = sf_strerror(file.get());
      file.reset();
      std::error_code ignored;
      fs::remove(tmp, ignored);
      throw DataError(path, 0, "cannot write the audio file: " + why);
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw DataError(path, 0, "cannot rename " + tmp + " into place: " + ec.message());
}

DecodedAudio decode_audio_file(const std::string& path, const AudioOptions& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw DataError(path, 0, "audio file not found");
  if (!fs::is_regular_file(path, ec)) throw DataError(path, 0, "audio path is not a regular file");
  if (fs::file_size(path, ec) == 0) throw DataError(path, 0, "audio file is empty");
  SF_INFO info{};
  std::unique_ptr<SNDFILE, int (*)(SNDFILE*)> file(sf_open(path.c_str(), SFM_READ, &info), &sf_close);
  if (!file) {
    const std::string why = sf_strerror(nullptr);
    std::string head(4096, '\0');
    {
      std::ifstream in(path, std::ios::binary);
      in.read(head.data(), static_cast<std::streamsize>(head.size()));
      head.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
    }
    const std::string header = wav_header_problem(head);
    if (!header.empty()) throw DataError(path, 0, header);
    throw DataError(path, 0, "not an audio file libsndfile reads (" + why + ")");
  }
  return decode_open(file.get(), info, path, options);
}

DecodedAudio decode_audio_bytes(const std::string& bytes, const std::string& name, const AudioOptions& options) {
  if (bytes.empty()) throw DataError(name, 0, "audio file is empty");
  struct Reader {
    const std::string* bytes;
    sf_count_t at = 0;
  } reader{&bytes};
  SF_VIRTUAL_IO io{};
  io.get_filelen = [](void* r) -> sf_count_t { return static_cast<sf_count_t>(static_cast<Reader*>(r)->bytes->size()); };
  io.seek = [](sf_count_t offset, int whence, void* r) -> sf_count_t {
    auto* x = static_cast<Reader*>(r);
    const auto size = static_cast<sf_count_t>(x->bytes->size());
    const sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? x->at : size;
    x->at = std::clamp<sf_count_t>(base + offset, 0, size);
    return x->at;
  };
  io.read = [](void* out, sf_count_t count, void* r) -> sf_count_t {
    auto* x = static_cast<Reader*>(r);
    const auto n = std::min<sf_count_t>(count, static_cast<sf_count_t>(x->bytes->size()) - x->at);
    if (n <= 0) return 0;
    std::memcpy(out, x->bytes->data() + x->at, static_cast<size_t>(n));
    x->at += n;
    return n;
  };
  io.write = [](const void*, sf_count_t, void*) -> sf_count_t { return 0; };
  io.tell = [](void* r) -> sf_count_t { return static_cast<Reader*>(r)->at; };
  SF_INFO info{};
  std::unique_ptr<SNDFILE, int (*)(SNDFILE*)> file(sf_open_virtual(&io, SFM_READ, &info, &reader), &sf_close);
  if (!file) {
    const std::string why = sf_strerror(nullptr);
    const std::string header = wav_header_problem(bytes.substr(0, 4096));
    if (!header.empty()) throw DataError(name, 0, header);
    throw DataError(name, 0, "not an audio file libsndfile reads (" + why + ")");
  }
  return decode_open(file.get(), info, name, options);
}

}  // namespace mmintent
