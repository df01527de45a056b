// The three splits: which images and messages each sample gets (the seeded streams decide).

#include <algorithm>
#include <cmath>
#include <system_error>

#include "demo.h"

namespace mmintent::make_demo {

Images read_fashion_mnist(const fs::path& images_path, const fs::path& labels_path) {
  for (const fs::path& path : {images_path, labels_path}) {
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      throw ToolError("Fashion-MNIST not found: " + path.string() +
                      " does not exist (install the Debian package " + kDatasetPackage +
                      ", or pass --fashion-mnist DIR)");
    }
  }
  return mmintent::detail::read_idx_images(images_path.string(), labels_path.string());
}

std::array<std::vector<std::size_t>, kNumGroups> group_pools(const Images& set, Rng& rng) {
  std::array<std::vector<std::size_t>, kNumGroups> pools;
  for (std::size_t i = 0; i < set.count; ++i) pools[kClassGroup[set.labels[i]]].push_back(i);
  for (auto& pool : pools) rng.shuffle(pool);
  return pools;
}

std::vector<Sample> make_split(const SplitSpec& spec, double mention_rate, const Images& set,
                               const std::array<std::vector<std::size_t>, kNumGroups>& pools,
                               std::array<std::size_t, kNumGroups>& offsets, std::uint64_t seed) {
  Rng rng(seed, spec.stream);
  const auto n = static_cast<std::size_t>(spec.per_intent);
  const auto mentions = static_cast<std::size_t>(std::llround(mention_rate * static_cast<double>(n)));
  std::vector<Sample> samples;
  samples.reserve(n * kNumIntents);
  for (int intent = 0; intent < kNumIntents; ++intent) {
    std::vector<char> mentioned(n, 0);
    std::fill(mentioned.begin(), mentioned.begin() + static_cast<std::ptrdiff_t>(mentions), 1);
    rng.shuffle(mentioned);
    const int group = group_of(intent);
    for (std::size_t k = 0; k < n; ++k) {
      Sample s;
      s.intent = intent;
      s.mentioned = mentioned[k] != 0;
      s.image = pools[group][offsets[group]++];
      s.cls = set.labels[s.image];
      s.text = make_message(action_of(intent), s.mentioned, s.cls, rng);
      samples.push_back(std::move(s));
    }
  }
  rng.shuffle(samples);
  return samples;
}

}  // namespace mmintent::make_demo
