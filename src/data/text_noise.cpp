#include "mmintent/data/text_noise.h"

#include "mmintent/core/seed.h"

#include <cctype>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace mmintent {
namespace {

/// A splitmix64 stream: uniform doubles in [0, 1) and integers in [0, n).
class Draws {
 public:
  explicit Draws(uint64_t seed) : state_(seed) {}
  uint64_t next() { return splitmix64(state_ += 0x9E3779B97F4A7C15ULL); }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }

 private:
  uint64_t state_;
};

/// The letters next to `c` on a QWERTY keyboard (lower case).
const char* neighbours(char c) {
  switch (c) {
    case 'q': return "wa";     case 'w': return "qeas";   case 'e': return "wrsd";   case 'r': return "etdf";
    case 't': return "ryfg";   case 'y': return "tugh";   case 'u': return "yihj";   case 'i': return "uojk";
    case 'o': return "ipkl";   case 'p': return "ol";     case 'a': return "qwsz";   case 's': return "wedxza";
    case 'd': return "erfcxs"; case 'f': return "rtgvcd"; case 'g': return "tyhbvf"; case 'h': return "yujnbg";
    case 'j': return "uikmnh"; case 'k': return "iolmj";  case 'l': return "opk";    case 'z': return "asx";
    case 'x': return "zsdc";   case 'c': return "xdfv";   case 'v': return "cfgb";   case 'b': return "vghn";
    case 'n': return "bhjm";   case 'm': return "njk";    default: return "e";
  }
}

bool ascii_letter(char c) { return static_cast<unsigned char>(c) < 128 && std::isalpha(static_cast<unsigned char>(c)); }

char neighbour_of(char c, Draws& draws) {
  const bool upper = std::isupper(static_cast<unsigned char>(c));
  const char* n = neighbours(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  const char out = n[draws.below(std::char_traits<char>::length(n))];
  return upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(out))) : out;
}

std::string typo(const std::string& word, Draws& draws) {
  std::vector<size_t> letters;
  for (size_t i = 0; i < word.size(); ++i) {
    if (ascii_letter(word[i])) letters.push_back(i);
  }
  if (letters.empty()) return word;
  const size_t i = letters[draws.below(letters.size())];
  std::string out = word;
  switch (draws.below(4)) {
    case 0: out[i] = neighbour_of(word[i], draws); break;
    case 1:
      if (word.size() > 1) out.erase(i, 1);
      else out[i] = neighbour_of(word[i], draws);
      break;
    case 2: out.insert(out.begin() + static_cast<std::ptrdiff_t>(i) + 1, neighbour_of(word[i], draws)); break;
    default:
      if (i + 1 < word.size() && static_cast<unsigned char>(word[i + 1]) < 128) std::swap(out[i], out[i + 1]);
      else out[i] = neighbour_of(word[i], draws);
  }
  return out;
}

}  // namespace

std::string TextNoise::str() const {
  std::ostringstream out;
  out << (kind == TextNoiseKind::typos ? "typos" : kind == TextNoiseKind::deletion ? "deletion" : "swap") << ":" << rate;
  return out.str();
}

TextNoise parse_text_noise(const std::string& spec) {
  const auto colon = spec.find(':');
  const std::string forms = "typos:R, deletion:R or swap:R with R in [0, 1] (e.g. typos:0.1)";
  if (colon == std::string::npos) throw std::invalid_argument("'" + spec + "' is not one of " + forms);
  TextNoise noise;
  const auto kind = spec.substr(0, colon);
  if (kind == "typos") noise.kind = TextNoiseKind::typos;
  else if (kind == "deletion") noise.kind = TextNoiseKind::deletion;
  else if (kind == "swap") noise.kind = TextNoiseKind::swap;
  else throw std::invalid_argument("'" + spec + "': unknown noise '" + kind + "'; " + forms);
  const auto value = spec.substr(colon + 1);
  char* end = nullptr;
  noise.rate = std::strtod(value.c_str(), &end);
  if (value.empty() || end != value.c_str() + value.size() || !(noise.rate >= 0 && noise.rate <= 1)) {
    throw std::invalid_argument("'" + spec + "': the rate must be a number in [0, 1]; " + forms);
  }
  return noise;
}

std::string apply_text_noise(const std::string& text, const TextNoise& noise, uint64_t seed) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) words.push_back(w);
  Draws draws(seed);
  switch (noise.kind) {
    case TextNoiseKind::typos:
      for (auto& w : words) {
        if (draws.uniform() < noise.rate) w = typo(w, draws);
      }
      break;
    case TextNoiseKind::deletion: {
      std::vector<std::string> kept;
      for (auto& w : words) {
        if (draws.uniform() >= noise.rate) kept.push_back(w);
      }
      if (kept.empty() && !words.empty()) kept.push_back(words[draws.below(words.size())]);
      words = std::move(kept);
      break;
    }
    case TextNoiseKind::swap:
      for (size_t i = 0; i + 1 < words.size(); ++i) {
        if (draws.uniform() < noise.rate) std::swap(words[i], words[i + 1]);
      }
      break;
  }
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

}  // namespace mmintent
