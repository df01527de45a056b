#pragma once
/// Seeded noise on texts: what `mmintent eval --perturb` measures robustness against.
/// Deterministic from (text, noise, seed): the same seed gives the same noisy text on every
/// machine.

#include <cstdint>
#include <string>

namespace mmintent {

enum class TextNoiseKind { typos, deletion, swap };

struct TextNoise {
  TextNoiseKind kind = TextNoiseKind::typos;
  double rate = 0;  ///< in [0, 1]
  /// "typos:0.1": the form parse_text_noise reads.
  std::string str() const;
};

/// "typos:R", "deletion:R" or "swap:R" with R in [0, 1]; throws std::invalid_argument naming
/// the accepted forms otherwise.
TextNoise parse_text_noise(const std::string& spec);

/// The text with noise, its words (runs of non-space characters) joined by single spaces:
/// - typos: each word with a letter gets, with probability `rate`, one typo at one of its
///   letters: a neighbour on a QWERTY keyboard in its place, the letter dropped, a neighbour
///   inserted after it, or the letter swapped with the next character (a quarter each);
/// - deletion: each word is dropped with probability `rate` (one always stays);
/// - swap: each word, with probability `rate`, changes places with the next one.
/// Non-ASCII bytes are never split or changed (a typo falls on an ASCII letter).
std::string apply_text_noise(const std::string& text, const TextNoise& noise, uint64_t seed);

}  // namespace mmintent
