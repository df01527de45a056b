#include "data/modalities/builtin.h"

#include "mmintent/core/seed.h"
#include "mmintent/data/augment.h"
#include "mmintent/data/dataset.h"
#include "mmintent/data/text_noise.h"
#include "mmintent/data/tokenizer.h"
#include "mmintent/error.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace mmintent::detail {

TextReader::TextReader(const ReaderContext& context)
    : tokenizer_(context.tokenizer), max_length_(context.options.max_length) {
  if (!tokenizer_) throw Error("MultimodalDataset: text is used but no tokenizer was given");
}

std::vector<std::string> TextReader::prepare(const std::vector<std::string>& values,
                                             const std::vector<long>&) {
  ids_.assign(values.size(), {});
  texts_ = values;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i].empty()) continue;
    auto ids = tokenizer_->encode(values[i]);
    if (static_cast<int64_t>(ids.size()) > max_length_) ids.resize(max_length_);
    ids_[i] = std::move(ids);
  }
  return std::vector<std::string>(values.size());
}

std::vector<int64_t> TextReader::augmented_ids(int64_t i, const TextAugmentOptions& noise,
                                               uint64_t seed) const {
  const auto& original = ids_.at(i);
  if (original.empty() || !noise.any()) return original;  // a missing text stays missing
  std::vector<int64_t> ids = original;
  if (noise.deletion > 0 || noise.swap > 0 || noise.typos > 0) {
    std::string text = texts_.at(i);
    const std::pair<TextNoiseKind, double> steps[] = {{TextNoiseKind::deletion, noise.deletion},
                                                      {TextNoiseKind::swap, noise.swap},
                                                      {TextNoiseKind::typos, noise.typos}};
    uint64_t k = 0;
    for (const auto& [kind, rate] : steps) {
      ++k;
      if (rate > 0) text = apply_text_noise(text, TextNoise{kind, rate}, mix_seed(seed, k, 0));
    }
    ids = tokenizer_->encode(text);
    if (static_cast<int64_t>(ids.size()) > max_length_) ids.resize(max_length_);
    if (ids.empty()) ids = original;  // the noise left nothing to read: keep the text
  }
  if (noise.token_dropout > 0 && ids.size() > 1) {
    uint64_t state = mix_seed(seed, 4, 0);
    const auto uniform = [&state] {
      return static_cast<double>(splitmix64(state += 0x9E3779B97F4A7C15ULL) >> 11) * 0x1.0p-53;
    };
    std::vector<int64_t> kept;
    for (const auto id : ids) {
      if (uniform() >= noise.token_dropout) kept.push_back(id);
    }
    // One token always stays (a random one when all were dropped).
    if (kept.empty()) kept.push_back(ids[static_cast<size_t>(uniform() * static_cast<double>(ids.size()))]);
    ids = std::move(kept);
  }
  return ids;
}

ModalityInput TextReader::collate(const std::vector<int64_t>& indices, const AugmentOptions* augment,
                                  uint64_t seed) const {
  const auto B = static_cast<int64_t>(indices.size());
  // Text augmentation: each sample's ids made again from its noisy text, random from (seed,
  // sample) alone; without it, the ids tokenised once.
  const bool noisy = augment && augment->text.any();
  std::vector<std::vector<int64_t>> augmented;
  if (noisy) {
    augmented.reserve(indices.size());
    for (auto i : indices) {
      augmented.push_back(augmented_ids(i, augment->text, mix_seed(seed, 2, static_cast<uint64_t>(i))));
    }
  }
  const auto ids_of = [&](int64_t b) -> const std::vector<int64_t>& {
    return noisy ? augmented[static_cast<size_t>(b)] : ids_.at(indices[static_cast<size_t>(b)]);
  };
  int64_t T = 1;
  for (int64_t b = 0; b < B; ++b) T = std::max<int64_t>(T, static_cast<int64_t>(ids_of(b).size()));
  ModalityInput in;
  in.data = at::zeros({B, T}, at::kLong);
  in.lengths = at::empty({B}, at::kLong);
  in.mask = at::empty({B}, at::kFloat);
  auto* tok = in.data.data_ptr<int64_t>();
  auto* len = in.lengths.data_ptr<int64_t>();
  auto* mask = in.mask.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& ids = ids_of(b);
    std::copy(ids.begin(), ids.end(), tok + b * T);
    len[b] = static_cast<int64_t>(ids.size());
    mask[b] = ids.empty() ? 0.f : 1.f;
  }
  return in;
}

}  // namespace mmintent::detail
