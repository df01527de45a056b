#pragma once
/// An in-memory BatchSource of synthetic multimodal samples for model and trainer tests.

#include "mmintent/core/batch.h"

#include <vector>

namespace mmintent::test {

/// Label = (keyword token % 4) + 4 * (bright half of the image): both modalities are needed.
class SyntheticSource : public BatchSource {
 public:
  SyntheticSource(int64_t n, int64_t batch_size, uint64_t seed, bool shuffle, int64_t classes = 8);
  /// Serves only rank `rank`'s shard of every pass (shard_span), as DataLoader does.
  void shard(int64_t rank, int64_t world_size) {
    rank_ = rank;
    world_ = world_size;
  }
  void start_epoch(int64_t epoch) override;
  std::optional<Batch> next() override;
  int64_t num_batches() const override { return (n_ + batch_size_ * world_ - 1) / (batch_size_ * world_); }
  int64_t num_samples() const override;
  int64_t batch_size_at(int64_t i) const override;
  int64_t global_batch_size_at(int64_t i) const override;
  /// The whole data set as one batch.
  Batch all() const;

 private:
  Batch gather(const std::vector<int64_t>& idx) const;
  int64_t n_, batch_size_;
  uint64_t seed_;
  bool shuffle_;
  at::Tensor ids_, lengths_, images_, labels_;
  std::vector<int64_t> order_;
  int64_t batch_ = 0;
  int64_t rank_ = 0, world_ = 1;
};

}  // namespace mmintent::test
