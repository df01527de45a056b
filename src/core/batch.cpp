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

const ModalityInput* Batch::find(const std::string& name) const {
  const auto it = inputs.find(name);
  return it == inputs.end() ? nullptr : &it->second;
}

const ModalityInput& Batch::input(const std::string& name) const {
  if (const auto* in = find(name)) return *in;
  std::string present;
  for (const auto& [n, in] : inputs) present += (present.empty() ? "" : ", ") + n;
  throw std::invalid_argument("the batch has no '" + name + "' input (it has: " +
                              (present.empty() ? "none" : present) + ")");
}

Batch Batch::to(const c10::Device& device, bool non_blocking) const {
  Batch b;
  for (const auto& [name, in] : inputs) {
    auto& out = b.inputs[name];
    out.data = move(in.data, device, non_blocking);
    out.lengths = in.lengths;  // lengths stay on the CPU: pack_padded_sequence wants them there.
    out.mask = move(in.mask, device, non_blocking);
  }
  b.labels = move(labels, device, non_blocking);
  b.indices = indices;
  b.soft_targets = move(soft_targets, device, non_blocking);
  b.teacher = move(teacher, device, non_blocking);
  b.rejected = move(rejected, device, non_blocking);
  b.shown = move(shown, device, non_blocking);
  b.propensity = move(propensity, device, non_blocking);
  return b;
}

Batch Batch::pin_memory() const {
  auto pin = [](const at::Tensor& t) { return t.defined() ? t.pin_memory() : t; };
  Batch b = *this;
  for (auto& [name, in] : b.inputs) {
    in.data = pin(in.data);
    in.mask = pin(in.mask);
  }
  b.labels = pin(labels);
  b.soft_targets = pin(soft_targets);
  b.teacher = pin(teacher);
  b.rejected = pin(rejected);
  b.shown = pin(shown);
  b.propensity = pin(propensity);
  return b;  // lengths and indices stay on the CPU (see to())
}

Batch concat_batches(const std::vector<Batch>& parts) {
  if (parts.empty()) throw std::invalid_argument("concat_batches: no batches");
  if (parts.size() == 1) return parts.front();
  Batch out;
  for (const auto& p : parts) {
    if (p.inputs.size() != parts.front().inputs.size()) {
      throw std::invalid_argument("concat_batches: parts carry different modalities");
    }
  }
  for (const auto& [name, first] : parts.front().inputs) {
    for (const auto& p : parts) {
      if (!p.find(name)) {
        throw std::invalid_argument("concat_batches: '" + name +
                                    "' is defined in some parts and not in others");
      }
    }
    const std::string key = name;
    auto& in = out.inputs[name];
    if (first.lengths.defined() && first.data.defined() && first.data.dim() >= 2) {
      // A sequence: right-pad every part to the longest.
      int64_t T = 1;
      for (const auto& p : parts) {
        const auto& d = p.input(key).data;
        if (!d.defined() || d.dim() < 2) {
          throw std::invalid_argument("concat_batches: parts disagree on '" + key + ".data'");
        }
        T = std::max<int64_t>(T, d.size(1));
      }
      std::vector<at::Tensor> padded;
      for (const auto& p : parts) {
        const auto& d = p.input(key).data;
        std::vector<int64_t> pad(2 * (d.dim() - 1), 0);
        pad[pad.size() - 1] = T - d.size(1);  // the last pair pads dimension 1 at its end
        padded.push_back(d.size(1) == T ? d : at::constant_pad_nd(d, pad, 0));
      }
      try {
        in.data = at::cat(padded, 0);
      } catch (const std::exception& e) {
        throw std::invalid_argument("concat_batches: parts disagree on '" + key + ".data': " + e.what());
      }
    } else {
      in.data = cat_field(parts, (key + ".data").c_str(), [&](const Batch& b) { return b.input(key).data; });
    }
    in.lengths = cat_field(parts, (key + ".lengths").c_str(), [&](const Batch& b) { return b.input(key).lengths; });
    in.mask = cat_field(parts, (key + ".mask").c_str(), [&](const Batch& b) { return b.input(key).mask; });
  }
  out.labels = cat_field(parts, "labels", [](const Batch& b) { return b.labels; });
  out.indices = cat_field(parts, "indices", [](const Batch& b) { return b.indices; });

  // Optional targets: fill the parts that lack them with "hard" rows / "nothing rejected".
  // A [B,K] field that some parts lack: those parts get rows of zeros.
  auto cat_rows = [&parts](at::Tensor Batch::*field) {
    int64_t K = -1;
    for (const auto& p : parts) {
      const auto& t = p.*field;
      if (!t.defined()) continue;
      if (K >= 0 && t.size(1) != K) {
        throw std::invalid_argument("concat_batches: parts disagree on the number of classes (" +
                                    std::to_string(K) + " vs " + std::to_string(t.size(1)) + ")");
      }
      K = t.size(1);
    }
    if (K < 0) return at::Tensor();
    std::vector<at::Tensor> ts;
    for (const auto& p : parts) ts.push_back((p.*field).defined() ? p.*field : at::zeros({p.size(), K}, at::kFloat));
    return at::cat(ts, 0);
  };
  out.soft_targets = cat_rows(&Batch::soft_targets);
  out.teacher = cat_rows(&Batch::teacher);
  // A [B] field that some parts lack: those parts get `fill`.
  auto cat_optional = [&parts](at::Tensor Batch::*field, double fill, at::ScalarType type) {
    bool any = false;
    for (const auto& p : parts) any = any || (p.*field).defined();
    if (!any) return at::Tensor();
    std::vector<at::Tensor> ts;
    for (const auto& p : parts) {
      ts.push_back((p.*field).defined() ? p.*field : at::full({p.size()}, fill, type));
    }
    return at::cat(ts, 0);
  };
  out.rejected = cat_optional(&Batch::rejected, -1, at::kLong);
  out.shown = cat_optional(&Batch::shown, -1, at::kLong);
  out.propensity = cat_optional(&Batch::propensity, 0, at::kFloat);
  return out;
}

ShardSpan shard_span(int64_t b, int64_t batch_size, int64_t samples, int64_t rank, int64_t world_size) {
  const int64_t g = batch_size * world_size;
  const int64_t start = b * g;
  const int64_t global = std::max<int64_t>(0, std::min(g, samples - start));
  return {start + global * rank / world_size, start + global * (rank + 1) / world_size};
}

}  // namespace mmintent
