#pragma once
/// An in-memory BatchSource of synthetic multimodal samples for model and trainer tests.

#include "mmintent/core/batch.h"

#include <vector>

namespace mmintent::test {

/// Label = (keyword token % 4) + 4 * (bright half of the image): both modalities are needed.
class SyntheticSource : public BatchSource {
 public:
  SyntheticSource(int64_t n, int64_t batch_size, uint64_t seed, bool shuffle, int64_t classes = 8);
  void start_epoch(int64_t epoch) override;
  std::optional<Batch> next() override;
  int64_t num_batches() const override { return (n_ + batch_size_ - 1) / batch_size_; }
  int64_t num_samples() const override { return n_; }
  int64_t batch_size_at(int64_t i) const override;
  /// The whole data set as one batch.
  Batch all() const;

 private:
  Batch gather(const std::vector<int64_t>& idx) const;
  int64_t n_, batch_size_;
  uint64_t seed_;
  bool shuffle_;
  at::Tensor ids_, lengths_, images_, labels_;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0;
};

}  // namespace mmintent::test
