#pragma once
/// mmintent_make_demo's parts (see main.cpp for what the tool makes): the seeded random
/// streams, the intents, and what each file of tools/make_demo/ offers the others.

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "data/idx.h"
#include "mmintent/core/seed.h"

namespace mmintent::make_demo {

namespace fs = std::filesystem;

constexpr const char* kDatasetPackage = "dataset-fashion-mnist";
constexpr int kImageSide = detail::kIdxImageSide;
constexpr int kNumClasses = detail::kIdxNumClasses;

/// A failure reported to the user as one line; main() turns it into exit status 1.
class ToolError : public std::runtime_error {
 public:
  explicit ToolError(const std::string& what) : std::runtime_error(what) {}
};

// ------------------------------------------------------------------------------------------
// Deterministic randomness

/// mt19937_64 plus hand-written distributions, so a seed gives the same data on every
/// standard library (std::uniform_int_distribution and friends are implementation-defined).
class Rng {
 public:
  /// One independent stream per (seed, stream id): changing one split's size leaves the
  /// other streams, and so the other splits, unchanged.
  Rng(std::uint64_t seed, std::uint64_t stream) : engine_(splitmix64(seed ^ splitmix64(stream))) {}

  /// Uniform integer in [0, n), n >= 1, unbiased: draws below 2^64 mod n are rejected.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t threshold = (0 - n) % n;
    for (;;) {
      const std::uint64_t r = engine_();
      if (r >= threshold) return r % n;
    }
  }
  /// Uniform double in [0, 1) from the top 53 bits.
  double unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  bool chance(double p) { return unit() < p; }

  template <typename T>
  const T& pick(const std::vector<T>& items) {
    return items[static_cast<std::size_t>(below(items.size()))];
  }
  /// Fisher-Yates.
  template <typename T>
  void shuffle(std::vector<T>& items) {
    for (std::size_t i = items.size(); i > 1; --i) {
      std::swap(items[i - 1], items[static_cast<std::size_t>(below(i))]);
    }
  }

 private:
  std::mt19937_64 engine_;
};

// ------------------------------------------------------------------------------------------
// Intents: action x product group

enum Action { kReturn = 0, kAvailability = 1, kCare = 2 };
constexpr int kNumActions = 3;
constexpr int kNumGroups = 4;
constexpr int kNumIntents = kNumActions * kNumGroups;
constexpr std::array<const char*, kNumActions> kActionNames = {"return", "availability", "care"};
constexpr std::array<const char*, kNumGroups> kGroupNames = {"clothing", "trousers", "footwear",
                                                             "bags"};

/// Fashion-MNIST class -> product group: 0 T-shirt/top, 2 Pullover, 3 Dress, 4 Coat, 6 Shirt
/// are clothing; 1 Trouser; 5 Sandal, 7 Sneaker, 9 Ankle boot are footwear; 8 Bag.
constexpr std::array<int, kNumClasses> kClassGroup = {0, 1, 0, 0, 0, 2, 0, 2, 3, 2};

constexpr int action_of(int intent) { return intent / kNumGroups; }
constexpr int group_of(int intent) { return intent % kNumGroups; }
/// "return_clothing", ...: the label written to the manifests.
std::string intent_name(int intent);

// ------------------------------------------------------------------------------------------
// Messages (messages.cpp)

/// One customer message for `action`; names the product (class `cls`) iff `mentioned`.
std::string make_message(int action, bool mentioned, int cls, Rng& rng);

/// Guards the template invariants the ceilings rely on (a programming error if broken).
void check_templates();

// ------------------------------------------------------------------------------------------
// Splits (splits.cpp)

using Images = detail::IdxImages;

/// Reads an images file and its labels file with the shared IDX reader; a missing file gets
/// the hint where Fashion-MNIST comes from, any other problem the reader's IdxError ("FILE:
/// what is wrong", which main() prints).
Images read_fashion_mnist(const fs::path& images_path, const fs::path& labels_path);

struct Sample {
  int intent = 0;
  bool mentioned = false;
  std::size_t image = 0;  ///< index into the split's Fashion-MNIST set
  int cls = 0;
  std::string text;
};

struct SplitSpec {
  const char* name;
  std::uint64_t per_intent;
  std::uint64_t stream;  ///< Rng stream for texts, mentions and order
};

/// Indices of each group's images in `set`, shuffled.
std::array<std::vector<std::size_t>, kNumGroups> group_pools(const Images& set, Rng& rng);

/// Builds one split: `per_intent` samples per intent, exactly round(rate * per_intent) of each
/// intent naming the product, images taken from `pools` starting at `offsets` (advanced).
std::vector<Sample> make_split(const SplitSpec& spec, double mention_rate, const Images& set,
                               const std::array<std::vector<std::size_t>, kNumGroups>& pools,
                               std::array<std::size_t, kNumGroups>& offsets, std::uint64_t seed);

// ------------------------------------------------------------------------------------------
// Output (output.cpp)

/// Writes `content` to PATH.tmp, then renames it to `path`: a reader never sees half a file.
void write_text_file_atomically(const fs::path& path, const std::string& content);

/// Writes OUT/images/<name>/NNNNN.png and OUT/<name>.jsonl for one split (PNGs an earlier run
/// left there are removed first).
void write_split(const fs::path& out_dir, const char* name, const std::vector<Sample>& samples,
                 const Images& set);

}  // namespace mmintent::make_demo
