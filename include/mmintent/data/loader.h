#pragma once
/// A batched loader over a MultimodalDataset: worker threads collate batches ahead of the
/// training step (bounded prefetch), in a deterministic order derived from the seed and epoch.
///
/// Sharded (world_size > 1) for data-parallel training: every rank derives the same order
/// of the pass and cuts it into global batches of world_size x batch_size samples; rank r
/// takes its slice of each. The shards of a pass are disjoint and together cover it, every
/// rank gets the same number of batches (a short last global batch is split as evenly as
/// it goes, so a rank's part may be empty), and 2 ranks x batch B see exactly the global
/// batches that 1 rank x batch 2B sees.

#include "mmintent/core/batch.h"
#include "mmintent/data/dataset.h"

#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mmintent {

struct LoaderOptions {
  int64_t batch_size = 32;
  bool shuffle = false;
  bool drop_last = false;
  int64_t num_workers = 1;  ///< 0: collate in the calling thread
  int64_t prefetch = 2;     ///< batches ready ahead, per worker
  uint64_t seed = 42;
  /// Augmentation for this loader (the training split's); null or disabled: none.
  std::shared_ptr<const AugmentOptions> augment;
  /// Collate into page-locked host memory, so that the copy to a CUDA device can be
  /// asynchronous (Batch::to(device, non_blocking=true)). Needs a CUDA build of LibTorch.
  bool pin_memory = false;
  /// This process's shard of every pass (see above); 0 and 1: the whole pass.
  int64_t rank = 0;
  int64_t world_size = 1;
};

class DataLoader : public BatchSource {
 public:
  DataLoader(std::shared_ptr<const MultimodalDataset> dataset, LoaderOptions options);
  ~DataLoader() override;
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  void start_epoch(int64_t epoch) override;
  /// Next batch of the current pass (a pass of epoch 0 starts implicitly if none was started).
  std::optional<Batch> next() override;
  int64_t num_batches() const override;
  int64_t num_samples() const override;
  int64_t batch_size_at(int64_t i) const override;
  int64_t global_batch_size_at(int64_t i) const override;

  const MultimodalDataset& dataset() const { return *dataset_; }
  /// The sample order of pass `epoch` (a permutation when shuffling, else 0..N-1).
  std::vector<int64_t> order(int64_t epoch) const;

 private:
  void stop_workers();
  void worker_loop();
  Batch make_batch(int64_t b) const;
  /// Samples of the pass over all ranks, and this rank's part of global batch `b`.
  int64_t global_samples() const;
  ShardSpan span(int64_t b) const;

  std::shared_ptr<const MultimodalDataset> dataset_;
  LoaderOptions options_;
  std::vector<int64_t> order_;
  uint64_t epoch_seed_ = 0;
  int64_t next_to_return_ = 0;
  bool started_ = false;

  // Worker state, guarded by mutex_.
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  std::map<int64_t, Batch> ready_;
  std::map<int64_t, std::exception_ptr> failed_;
  int64_t next_to_make_ = 0;
  bool stopping_ = false;
};

}  // namespace mmintent
