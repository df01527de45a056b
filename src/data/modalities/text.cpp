#include "data/modalities/builtin.h"

#include "mmintent/data/dataset.h"
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
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i].empty()) continue;
    auto ids = tokenizer_->encode(values[i]);
    if (static_cast<int64_t>(ids.size()) > max_length_) ids.resize(max_length_);
    ids_[i] = std::move(ids);
  }
  return std::vector<std::string>(values.size());
}

ModalityInput TextReader::collate(const std::vector<int64_t>& indices, const AugmentOptions*,
                                  uint64_t) const {
  const auto B = static_cast<int64_t>(indices.size());
  int64_t T = 1;
  for (auto i : indices) T = std::max<int64_t>(T, static_cast<int64_t>(ids_.at(i).size()));
  ModalityInput in;
  in.data = at::zeros({B, T}, at::kLong);
  in.lengths = at::empty({B}, at::kLong);
  in.mask = at::empty({B}, at::kFloat);
  auto* tok = in.data.data_ptr<int64_t>();
  auto* len = in.lengths.data_ptr<int64_t>();
  auto* mask = in.mask.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& ids = ids_[indices[b]];
    std::copy(ids.begin(), ids.end(), tok + b * T);
    len[b] = static_cast<int64_t>(ids.size());
    mask[b] = ids.empty() ? 0.f : 1.f;
  }
  return in;
}

}  // namespace mmintent::detail
