// Seeded text noise for `eval --perturb`: deterministic, and each kind does what it says.

#include "mmintent/data/text_noise.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace mmintent;

namespace {

std::vector<std::string> words_of(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

TEST(TextNoiseTest, ParsesTheThreeKindsAndRefusesOthersNamingTheForms) {
  const auto t = parse_text_noise("typos:0.1");
  EXPECT_EQ(t.kind, TextNoiseKind::typos);
  EXPECT_DOUBLE_EQ(t.rate, 0.1);
  EXPECT_EQ(t.str(), "typos:0.1");
  EXPECT_EQ(parse_text_noise("deletion:0").kind, TextNoiseKind::deletion);
  EXPECT_EQ(parse_text_noise("swap:1").str(), "swap:1");
  for (const char* bad : {"typo:0.1", "typos", "typos:", "typos:1.5", "typos:-0.1", "typos:0.1x", ":0.1"}) {
    try {
      parse_text_noise(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("typos:R, deletion:R or swap:R"), std::string::npos) << e.what();
    }
  }
}

TEST(TextNoiseTest, TheSameSeedGivesTheSameNoiseAndAnotherSeedOtherNoise) {
  const std::string text = "please refund my purchase from last tuesday at the shop";
  for (const char* spec : {"typos:0.5", "deletion:0.5", "swap:0.5"}) {
    const auto noise = parse_text_noise(spec);
    EXPECT_EQ(apply_text_noise(text, noise, 7), apply_text_noise(text, noise, 7)) << spec;
    int differing = 0;
    for (uint64_t seed = 1; seed <= 20; ++seed) differing += apply_text_noise(text, noise, seed) != apply_text_noise(text, noise, seed + 100);
    EXPECT_GE(differing, 15) << spec << ": seeds should draw different noise";
  }
}

TEST(TextNoiseTest, TyposChangeEachChosenWordByOneEdit) {
  const std::string text = "please  refund my purchase";  // no doubled letters: a swap always shows
  EXPECT_EQ(apply_text_noise(text, parse_text_noise("typos:0"), 3), "please refund my purchase");
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const auto before = words_of(text), after = words_of(apply_text_noise(text, parse_text_noise("typos:1"), seed));
    ASSERT_EQ(after.size(), before.size());
    for (size_t i = 0; i < before.size(); ++i) {
      EXPECT_NE(after[i], before[i]) << seed;
      EXPECT_LE(std::abs(static_cast<int>(after[i].size()) - static_cast<int>(before[i].size())), 1) << after[i];
    }
  }
  // 10% of words over many draws: about one word in ten has a typo.
  int changed = 0, total = 0;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    const auto before = words_of(text), after = words_of(apply_text_noise(text, parse_text_noise("typos:0.1"), seed));
    for (size_t i = 0; i < before.size(); ++i) changed += after[i] != before[i];
    total += static_cast<int>(before.size());
  }
  EXPECT_NEAR(static_cast<double>(changed) / total, 0.1, 0.03);
  // UTF-8 characters are never cut: the accents survive whatever the typos.
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const auto out = apply_text_noise("café crème brûlée", parse_text_noise("typos:1"), seed);
    EXPECT_NE(out.find("é"), std::string::npos) << out;
    EXPECT_NE(out.find("è"), std::string::npos) << out;
    EXPECT_NE(out.find("û"), std::string::npos) << out;
  }
}

TEST(TextNoiseTest, DeletionDropsWordsButNeverAllAndSwapKeepsTheWords) {
  const std::string text = "a b c d e";
  EXPECT_EQ(apply_text_noise(text, parse_text_noise("deletion:0"), 1), text);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const auto left = words_of(apply_text_noise(text, parse_text_noise("deletion:1"), seed));
    ASSERT_EQ(left.size(), 1u);
    EXPECT_NE(text.find(left[0]), std::string::npos);
    const auto some = words_of(apply_text_noise(text, parse_text_noise("deletion:0.5"), seed));
    EXPECT_GE(some.size(), 1u);
    EXPECT_TRUE(std::is_sorted(some.begin(), some.end())) << "deletion keeps the order";
  }
  EXPECT_EQ(apply_text_noise(text, parse_text_noise("swap:0"), 1), text);
  EXPECT_EQ(apply_text_noise(text, parse_text_noise("swap:1"), 1), "b c d e a");  // each word swaps on
  auto swapped = words_of(apply_text_noise(text, parse_text_noise("swap:0.5"), 9));
  std::sort(swapped.begin(), swapped.end());
  EXPECT_EQ(swapped, words_of(text));
  EXPECT_EQ(apply_text_noise("", parse_text_noise("deletion:1"), 1), "");
}

}  // namespace
