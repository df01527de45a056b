#include "mmintent/core/batch.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace mmintent {
namespace {
at::Tensor move(const at::Tensor& t, const c10::Device& device, bool non_blocking) {
  return t.defined() ? t.to(device, non_blocking) : t;
}

/// Concatenates the tensor `get(part)` of every part; all defined or all undefined.
template <class Get>
at::Tensor cat_field(const std::vector<Batch>& parts, const char* name, Get get) {
  const bool first = get(parts.front()).defined();
  std::vector<at::Tensor> ts;
  for (const auto& p : parts) {
    if (get(p).defined() != first) {
      throw std::invalid_argument(std::string("concat_batches: '") + name +
                                  "' is defined in some parts and not in others");
    }
    if (first) ts.push_back(get(p));
  }
  if (!first) return {};
  try {
    return at::cat(ts, 0);
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("concat_batches: parts disagree on '") + name +
                                "': " + e.what());
  }
}
}  // namespace

Batch Batch::to(const c10::Device& device, bool non_blocking) const {
  Batch b;
  b.token_ids = move(token_ids, device, non_blocking);
  b.lengths = lengths;  // lengths stay on the CPU: pack_padded_sequence wants them there.
  b.text_mask = move(text_mask, device, non_blocking);
  b.images = move(images, device, non_blocking);
  b.image_mask = move(image_mask, device, non_blocking);
  b.labels = move(labels, device, non_blocking);
  b.indices = indices;
  b.soft_targets = move(soft_targets, device, non_blocking);
  b.rejected = move(rejected, device, non_blocking);
  return b;
}

Batch Batch::pin_memory() const {
  auto pin = [](const at::Tensor& t) { return t.defined() ? t.pin_memory() : t; };
  Batch b = *this;
  b.token_ids = pin(token_ids);
  b.text_mask = pin(text_mask);
  b.images = pin(images);
  b.image_mask = pin(image_mask);
  b.labels = pin(labels);
  b.soft_targets = pin(soft_targets);
  b.rejected = pin(rejected);
  return b;  // lengths and indices stay on the CPU (see to())
}

Batch concat_batches(const std::vector<Batch>& parts) {
  if (parts.empty()) throw std::invalid_argument("concat_batches: no batches");
  if (parts.size() == 1) return parts.front();
  Batch out;
  // Token ids: right-pad every part to the longest text.
  if (parts.front().token_ids.defined()) {
    int64_t T = 1;
    for (const auto& p : parts) {
      if (p.token_ids.defined()) T = std::max<int64_t>(T, p.token_ids.size(1));
    }
    std::vector<at::Tensor> ids;
    for (const auto& p : parts) {
      if (!p.token_ids.defined()) {
        throw std::invalid_argument("concat_batches: 'token_ids' is defined in some parts and not in others");
      }
      ids.push_back(p.token_ids.size(1) == T
                        ? p.token_ids
                        : at::constant_pad_nd(p.token_ids, {0, T - p.token_ids.size(1)}, 0));
    }
    out.token_ids = at::cat(ids, 0);
  } else {
    cat_field(parts, "token_ids", [](const Batch& b) { return b.token_ids; });
  }
  out.lengths = cat_field(parts, "lengths", [](const Batch& b) { return b.lengths; });
  out.text_mask = cat_field(parts, "text_mask", [](const Batch& b) { return b.text_mask; });
  out.images = cat_field(parts, "images", [](const Batch& b) { return b.images; });
  out.image_mask = cat_field(parts, "image_mask", [](const Batch& b) { return b.image_mask; });
  out.labels = cat_field(parts, "labels", [](const Batch& b) { return b.labels; });
  out.indices = cat_field(parts, "indices", [](const Batch& b) { return b.indices; });

  // Optional targets: fill the parts that lack them with "hard" rows / "nothing rejected".
  int64_t K = -1;
  bool any_rejected = false;
  for (const auto& p : parts) {
    if (p.soft_targets.defined()) {
      if (K >= 0 && p.soft_targets.size(1) != K) {
        throw std::invalid_argument("concat_batches: parts disagree on the number of classes (" +
                                    std::to_string(K) + " vs " +
                                    std::to_string(p.soft_targets.size(1)) + ")");
      }
      K = p.soft_targets.size(1);
    }
    any_rejected = any_rejected || p.rejected.defined();
  }
  if (K >= 0) {
    std::vector<at::Tensor> ts;
    for (const auto& p : parts) {
      ts.push_back(p.soft_targets.defined() ? p.soft_targets
                                            : at::zeros({p.size(), K}, at::kFloat));
    }
    out.soft_targets = at::cat(ts, 0);
  }
  if (any_rejected) {
    std::vector<at::Tensor> ts;
    for (const auto& p : parts) {
      ts.push_back(p.rejected.defined() ? p.rejected : at::full({p.size()}, -1, at::kLong));
    }
    out.rejected = at::cat(ts, 0);
  }
  return out;
}

ShardSpan shard_span(int64_t b, int64_t batch_size, int64_t samples, int64_t rank, int64_t world_size) {
  const int64_t g = batch_size * world_size;
  const int64_t start = b * g;
  const int64_t global = std::max<int64_t>(0, std::min(g, samples - start));
  return {start + global * rank / world_size, start + global * (rank + 1) / world_size};
}

}  // namespace mmintent
