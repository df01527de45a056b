#include "support/synthetic.h"

#include <torch/torch.h>

#include <numeric>
#include <random>

namespace mmintent::test {

SyntheticSource::SyntheticSource(int64_t n, int64_t batch_size, uint64_t seed, bool shuffle,
                                 int64_t classes)
    : n_(n), batch_size_(batch_size), seed_(seed), shuffle_(shuffle) {
  std::mt19937_64 rng(seed);
  const int64_t T = 10;
  ids_ = torch::zeros({n, T}, torch::kLong);
  lengths_ = torch::zeros({n}, torch::kLong);
  images_ = torch::zeros({n, 1, 8, 8});
  labels_ = torch::zeros({n}, torch::kLong);
  auto ids = ids_.accessor<int64_t, 2>();
  auto img = images_.accessor<float, 4>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = 2 + static_cast<int64_t>(rng() % (T - 2));
    const int64_t keyword = 1 + static_cast<int64_t>(rng() % 4);
    for (int64_t t = 0; t < len; ++t) ids[i][t] = 5 + static_cast<int64_t>(rng() % 20);
    ids[i][static_cast<int64_t>(rng() % len)] = keyword;
    lengths_[i] = len;
    const int64_t half = static_cast<int64_t>(rng() % 2);
    for (int64_t y = 0; y < 8; ++y)
      for (int64_t x = 0; x < 8; ++x) img[i][0][y][x] = ((x < 4) == (half == 0) ? 1.f : 0.f) + 0.1f * static_cast<float>(rng() % 10) / 10.f;
    labels_[i] = ((keyword - 1) + 4 * half) % classes;
  }
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
}

void SyntheticSource::start_epoch(int64_t epoch) {
  std::iota(order_.begin(), order_.end(), 0);
  if (shuffle_) {
    std::mt19937_64 rng(seed_ * 7919 + static_cast<uint64_t>(epoch));
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng() % i]);
  }
  batch_ = 0;
}

int64_t SyntheticSource::batch_size_at(int64_t i) const {
  return shard_span(i, batch_size_, n_, rank_, world_).size();
}

int64_t SyntheticSource::global_batch_size_at(int64_t i) const {
  return shard_span(i, batch_size_ * world_, n_, 0, 1).size();
}

int64_t SyntheticSource::num_samples() const {
  int64_t n = 0;
  for (int64_t i = 0; i < num_batches(); ++i) n += batch_size_at(i);
  return n;
}

Batch SyntheticSource::gather(const std::vector<int64_t>& idx) const {
  auto t = torch::tensor(idx, torch::kLong);
  Batch b;
  b.inputs["text"].data = ids_.index_select(0, t);
  b.inputs["text"].lengths = lengths_.index_select(0, t);
  b.inputs["text"].mask = torch::ones({t.size(0)});
  b.inputs["image"].data = images_.index_select(0, t);
  b.inputs["image"].mask = torch::ones({t.size(0)});
  b.labels = labels_.index_select(0, t);
  b.indices = t;
  return b;
}

std::optional<Batch> SyntheticSource::next() {
  if (batch_ >= num_batches()) return std::nullopt;
  const auto span = shard_span(batch_++, batch_size_, n_, rank_, world_);
  std::vector<int64_t> idx(order_.begin() + span.begin, order_.begin() + span.end);
  return gather(idx);
}

Batch SyntheticSource::all() const {
  std::vector<int64_t> idx(n_);
  std::iota(idx.begin(), idx.end(), 0);
  return gather(idx);
}

}  // namespace mmintent::test
