// mmintent import spoken-snips | spoken: texts spoken by espeak-ng over many voices, speeds and
// pitches, with additive noise, split by voice (see include/mmintent/data/importers.h).
#include "data/importers/common.h"
#include "data/importers/espeak.h"
#include "mmintent/core/files.h"
#include "mmintent/core/seed.h"
#include "mmintent/data/audio.h"
#include "mmintent/error.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using namespace detail;

double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0); }

/// How one utterance is spoken.
struct Rendition {
  std::string voice;  ///< accent+variant
  int rate = 175, pitch = 50;
  std::string noise = "none";  ///< none | white | pink
  double snr_db = 0;
  double peak = 0.8;
};

/// Gaussian white noise, or pink noise (Paul Kellet's filter of white noise), of unit power.
std::vector<float> make_noise(const std::string& kind, size_t n, std::mt19937_64& rng) {
  std::normal_distribution<double> white(0.0, 1.0);
  std::vector<double> x(n);
  double b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0, b6 = 0;
  for (size_t i = 0; i < n; ++i) {
    const double w = white(rng);
    if (kind == "pink") {
      b0 = 0.99886 * b0 + w * 0.0555179;
      b1 = 0.99332 * b1 + w * 0.0750759;
      b2 = 0.96900 * b2 + w * 0.1538520;
      b3 = 0.86650 * b3 + w * 0.3104856;
      b4 = 0.55000 * b4 + w * 0.5329522;
      b5 = -0.7616 * b5 - w * 0.0168980;
      x[i] = b0 + b1 + b2 + b3 + b4 + b5 + b6 + w * 0.5362;
      b6 = w * 0.115926;
    } else {
      x[i] = w;
    }
  }
  double power = 0;
  for (double v : x) power += v * v;
  const double scale = n > 0 && power > 0 ? 1.0 / std::sqrt(power / double(n)) : 0.0;
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(x[i] * scale);
  return out;
}

std::string snr_name(const Rendition& r) {
  if (r.noise == "none") return "clean";
  std::ostringstream s;
  s << r.snr_db << " dB";
  return s.str();
}

/// Speaks every record's text into OUT/audio/<split>/, sets its `audio` and rendition fields,
/// then writes the manifests and OUT/README.md. `source`: where the texts came from, for the
/// README.
void speak_splits(Splits& splits, const std::string& out_dir, const SpeechOptions& o,
                  const std::string& source, ImportSummary& summary) {
  if (o.accents.empty()) throw Error("spoken-snips: at least one accent is needed");
  if (!(o.val_voices > 0 && o.test_voices > 0 && o.val_voices + o.test_voices < 1)) {
    throw Error("spoken-snips: the val and test shares of the voices must be > 0 and sum to less than 1");
  }
  if (o.snr_db.empty() && !o.clean) throw Error("spoken-snips: give at least one SNR, or clean");
  if (o.rate_min < 80 || o.rate_max > 450 || o.rate_min > o.rate_max) {
    throw Error("spoken-snips: rates must satisfy 80 <= min <= max <= 450 words per minute");
  }
  if (o.pitch_min < 0 || o.pitch_max > 100 || o.pitch_min > o.pitch_max) {
    throw Error("spoken-snips: pitches must satisfy 0 <= min <= max <= 100");
  }
  if (o.limit > 0) {
    for (auto& split : splits) {  // every k-th record: the intents stay balanced as they were
      if (split.size() <= o.limit) continue;
      std::vector<OutRecord> kept;
      for (size_t i = 0; i < o.limit; ++i) kept.push_back(split[i * split.size() / o.limit]);
      split = std::move(kept);
    }
  }

  Espeak& espeak = Espeak::instance();
  for (const auto& accent : o.accents) espeak.speak("test", accent, 175, 50);  // unknown accents fail here
  // Voice variants by split: a seeded shuffle, the first share for test, the next for val.
  std::vector<std::string> variants = espeak.variants();
  if (variants.size() < 3) throw Error("spoken-snips: espeak-ng lists " + std::to_string(variants.size()) + " voice variants, at least 3 are needed");
  std::mt19937_64 shuffle_rng(mix_seed(o.seed, 17, 0));
  for (size_t i = variants.size() - 1; i > 0; --i) std::swap(variants[i], variants[shuffle_rng() % (i + 1)]);
  const auto n_test = std::max<size_t>(1, static_cast<size_t>(std::llround(o.test_voices * double(variants.size()))));
  const auto n_val = std::max<size_t>(1, static_cast<size_t>(std::llround(o.val_voices * double(variants.size()))));
  std::array<std::vector<std::string>, 3> voices;
  for (size_t i = 0; i < variants.size(); ++i) voices[i < n_test ? 2 : i < n_test + n_val ? 1 : 0].push_back(variants[i]);
  for (auto& v : voices) std::sort(v.begin(), v.end());

  // Old manifests go first: none may point at audio being rewritten.
  const fs::path out(out_dir);
  std::error_code ec;
  for (const char* name : kSplitNames) fs::remove(out / (std::string(name) + ".jsonl"), ec);
  struct Job {
    size_t split, index;
  };
  std::vector<Job> jobs;
  for (size_t s = 0; s < 3; ++s) {
    fs::create_directories(out / "audio" / kSplitNames[s], ec);
    if (ec) throw DataError((out / "audio" / kSplitNames[s]).string(), 0, "cannot create the folder: " + ec.message());
    for (size_t i = 0; i < splits[s].size(); ++i) jobs.push_back({s, i});
  }
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  std::array<std::map<std::string, size_t>, 3> per_level;
  std::mutex level_mutex;
  auto work = [&] {
    for (size_t j = next++; j < jobs.size(); j = next++) {
      {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (error) return;
      }
      try {
        const auto [s, i] = jobs[j];
        auto& record = splits[s][i];
        std::mt19937_64 rng(mix_seed(o.seed, 100 + s, i));
        Rendition r;
        r.voice = o.accents[rng() % o.accents.size()] + "+" + voices[s][rng() % voices[s].size()];
        r.rate = o.rate_min + static_cast<int>(rng() % static_cast<uint64_t>(o.rate_max - o.rate_min + 1));
        r.pitch = o.pitch_min + static_cast<int>(rng() % static_cast<uint64_t>(o.pitch_max - o.pitch_min + 1));
        const size_t level = rng() % (o.snr_db.size() + (o.clean ? 1 : 0));
        if (!(o.clean && level == 0)) {
          r.snr_db = o.snr_db[level - (o.clean ? 1 : 0)];
          r.noise = rng() % 2 == 0 ? "white" : "pink";
        }
        r.peak = 0.25 + 0.65 * uniform01(rng);
        const auto spoken = espeak.speak(record.text, r.voice, r.rate, r.pitch);
        DecodedAudio clip;
        clip.sample_rate = o.sample_rate;
        clip.samples = resample(spoken, espeak.sample_rate(), o.sample_rate);
        if (clip.samples.empty()) throw Error("espeak-ng said nothing for \"" + record.text + "\" with voice " + r.voice);
        float peak = 0;
        for (float v : clip.samples) peak = std::max(peak, std::abs(v));
        const float gain = peak > 0 ? static_cast<float>(r.peak) / peak : 0.f;
        double power = 0;
        for (auto& v : clip.samples) {
          v *= gain;
          power += double(v) * v;
        }
        power /= double(clip.samples.size());
        if (r.noise != "none") {
          const auto noise = make_noise(r.noise, clip.samples.size(), rng);
          const auto scale = static_cast<float>(std::sqrt(power / std::pow(10.0, r.snr_db / 10.0)));
          for (size_t k = 0; k < noise.size(); ++k) clip.samples[k] += scale * noise[k];
        }
        std::ostringstream name;
        name << "audio/" << kSplitNames[s] << "/" << std::setw(6) << std::setfill('0') << i << ".wav";
        write_wav_file((out / name.str()).string(), clip);
        record.extra["audio"] = name.str();
        record.extra["voice"] = r.voice;
        record.extra["rate"] = r.rate;
        record.extra["pitch"] = r.pitch;
        record.extra["noise"] = r.noise;
        record.extra["snr"] = snr_name(r);
        record.extra["seconds"] = std::round(clip.seconds() * 1000.0) / 1000.0;
        std::lock_guard<std::mutex> lock(level_mutex);
        ++per_level[s][snr_name(r)];
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        return;
      }
    }
  };
  const auto cores = static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t threads = std::max<int64_t>(1, o.threads > 0 ? o.threads : cores);
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);

  write_manifests(out, splits, /*with_text=*/true, /*with_image=*/false, summary);
  count_splits(splits, [](const OutRecord& r) { return r.label; }, summary);
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : " ") + x;
    return s;
  };
  summary.notes.push_back("the speech is synthetic: espeak-ng's formant synthesis, not people (see README.md there)");
  summary.notes.push_back("voices = accent (" + list(o.accents) + ") + variant; variants by split, never shared: train " +
                          std::to_string(voices[0].size()) + ", val " + std::to_string(voices[1].size()) + " (" +
                          list(voices[1]) + "), test " + std::to_string(voices[2].size()) + " (" + list(voices[2]) + ")");
  for (size_t s = 0; s < 3; ++s) {
    std::string levels_text;
    for (const auto& [level, n] : per_level[s]) levels_text += (levels_text.empty() ? "" : ", ") + level + " " + std::to_string(n);
    summary.notes.push_back(std::string(kSplitNames[s]) + " by noise: " + levels_text);
  }
  if (o.limit > 0) summary.notes.push_back("limited to " + std::to_string(o.limit) + " utterances per split (--limit)");

  // The data set's own README: what it is, and what its figures can and cannot say.
  std::ofstream readme(out / "README.md");
  readme << "# " << source << " (synthetic speech)\n\n"
         << "Written by `mmintent import " << summary.dataset << "` from `" << source << "`.\n\n"
         << "**The speech is synthetic.** Every utterance was spoken by espeak-ng, a formant synthesiser, not by a "
            "person: " << o.accents.size() << " English accents x " << variants.size()
         << " voice variants, speaking rates " << o.rate_min << "-" << o.rate_max << " words per minute, pitches "
         << o.pitch_min << "-" << o.pitch_max << ", peak levels 0.25-0.9, and white or pink noise added at the "
            "signal-to-noise ratios listed in each record (`snr`; `clean`: none). Each split has its own voice "
            "variants (test voices never speak in train or val), so test accuracy measures generalisation to "
            "unseen synthetic voices.\n\n"
         << "What that means for the figures: espeak-ng pronounces a word the same way every time for a given "
            "voice, has no disfluencies, no reverberation, no microphone and no real background; the variation "
            "between its voices is smaller than between people. Accuracy here is an upper bound on what the same "
            "model would reach on people's speech, and a check that the audio path learns words from sound, not a "
            "measure of real-world speech recognition.\n\n"
         << "Records: `audio` (16-bit mono WAV at " << o.sample_rate << " Hz, relative to this folder), `text` (the "
            "transcript: not given to an audio-only model), `label`, `voice`, `rate`, `pitch`, `noise`, `snr`, "
            "`seconds`, and the source's other fields. espeak-ng is GPL-3.0-or-later (its output is not covered by "
            "it); the texts keep their source's licence.\n";
}

}  // namespace

ImportSummary import_spoken_snips(const std::string& src_dir, const std::string& out_dir,
                                  const SpokenSnipsImportOptions& options) {
  ImportSummary summary;
  summary.dataset = "spoken-snips";
  summary.kind = "intent";
  Splits splits = read_snips(src_dir, options.text, summary);  // reads and checks every file first
  speak_splits(splits, out_dir, options.speech, "SNIPS 2017 (CC0 1.0) in " + src_dir, summary);
  return summary;
}

ImportSummary import_spoken(const std::string& src_dir, const std::string& out_dir, const SpeechOptions& options) {
  ImportSummary summary;
  summary.dataset = "spoken";
  summary.kind = "intent";
  const fs::path in(src_dir), out(out_dir);
  Splits splits;
  for (size_t s = 0; s < 3; ++s) {
    const fs::path path = in / (std::string(kSplitNames[s]) + ".jsonl");
    const std::string text = mmintent::read_file(path, "manifest");
    std::istringstream lines(text);
    long line_no = 0;
    for (std::string line; std::getline(lines, line);) {
      ++line_no;
      if (strip(line).empty()) continue;
      nlohmann::ordered_json j;
      try {
        j = nlohmann::ordered_json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw DataError(path.string(), line_no, std::string("not valid JSON: ") + e.what());
      }
      if (!j.is_object()) throw DataError(path.string(), line_no, "expected a JSON object");
      const auto t = j.find("text"), l = j.find("label");
      if (t == j.end() || !t->is_string() || strip(t->get<std::string>()).empty()) {
        throw DataError(path.string(), line_no, "no \"text\" to speak");
      }
      if (l == j.end() || !l->is_string() || l->get<std::string>().empty()) {
        throw DataError(path.string(), line_no, "no \"label\" (a string)");
      }
      OutRecord r;
      r.text = t->get<std::string>();
      r.label = l->get<std::string>();
      for (const auto& [key, value] : j.items()) {
        if (key == "text" || key == "label" || key == "audio") continue;
        if (key == "image" && value.is_string() && !value.get<std::string>().empty() &&
            fs::path(value.get<std::string>()).is_relative()) {
          // Relative to the source manifest's folder: make it relative to OUT_DIR's.
          const fs::path image = fs::absolute(in / value.get<std::string>()).lexically_normal();
          r.extra[key] = image.lexically_relative(fs::absolute(out).lexically_normal()).generic_string();
        } else {
          r.extra[key] = value;
        }
      }
      splits[s].push_back(std::move(r));
    }
  }
  speak_splits(splits, out_dir, options, "the manifests in " + src_dir, summary);
  return summary;
}

}  // namespace mmintent
