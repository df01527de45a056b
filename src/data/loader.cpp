#include "mmintent/data/loader.h"

#include "mmintent/error.h"

#include <ATen/Functions.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace mmintent {

DataLoader::DataLoader(std::shared_ptr<const MultimodalDataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(std::move(options)) {
  if (!dataset_) throw Error("DataLoader: no dataset");
  if (options_.batch_size < 1) throw Error("DataLoader: batch_size must be >= 1");
  if (options_.num_workers < 0 || options_.prefetch < 1) {
    throw Error("DataLoader: num_workers must be >= 0 and prefetch >= 1");
  }
  if (options_.world_size < 1 || options_.rank < 0 || options_.rank >= options_.world_size) {
    throw Error("DataLoader: rank " + std::to_string(options_.rank) + " is not in [0, world_size " +
                std::to_string(options_.world_size) + ")");
  }
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::global_samples() const {
  const int64_t n = dataset_->size(), g = options_.batch_size * options_.world_size;
  return options_.drop_last ? (n / g) * g : n;
}

int64_t DataLoader::num_batches() const {
  const int64_t n = global_samples(), g = options_.batch_size * options_.world_size;
  return (n + g - 1) / g;
}

int64_t DataLoader::global_batch_size_at(int64_t i) const {
  return shard_span(i, options_.batch_size * options_.world_size, global_samples(), 0, 1).size();
}

ShardSpan DataLoader::span(int64_t b) const {
  return shard_span(b, options_.batch_size, global_samples(), options_.rank, options_.world_size);
}

int64_t DataLoader::batch_size_at(int64_t i) const { return span(i).size(); }

int64_t DataLoader::num_samples() const {
  int64_t n = 0;
  for (int64_t i = 0, b = num_batches(); i < b; ++i) n += batch_size_at(i);
  return n;
}

std::vector<int64_t> DataLoader::order(int64_t epoch) const {
  std::vector<int64_t> order(dataset_->size());
  std::iota(order.begin(), order.end(), 0);
  if (options_.shuffle) {
    // Fisher-Yates with our own mapping of random words to ranges: std::shuffle's use of the
    // engine is implementation-defined, this order is the same on every platform.
    std::mt19937_64 rng(mix_seed(options_.seed, static_cast<uint64_t>(epoch), 0x5EED));
    for (size_t i = order.size(); i > 1; --i) {
      const auto j = static_cast<size_t>(rng() % i);
      std::swap(order[i - 1], order[j]);
    }
  }
  return order;
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  ready_.clear();
  failed_.clear();
  stopping_ = false;
}

void DataLoader::start_epoch(int64_t epoch) {
  stop_workers();
  started_ = true;
  order_ = order(epoch);
  epoch_seed_ = mix_seed(options_.seed, static_cast<uint64_t>(epoch), 0xA11A);
  next_to_return_ = 0;
  next_to_make_ = 0;
  for (int64_t w = 0; w < options_.num_workers; ++w) workers_.emplace_back([this] { worker_loop(); });
}

Batch DataLoader::make_batch(int64_t b) const {
  const auto [begin, end] = span(b);
  if (end == begin) {  // this rank's part of a short last global batch can be empty
    Batch empty;
    empty.indices = at::empty({0}, at::kLong);
    return empty;
  }
  std::vector<int64_t> indices(order_.begin() + begin, order_.begin() + end);
  const AugmentOptions* augment =
      options_.augment && options_.augment->enabled ? options_.augment.get() : nullptr;
  auto batch = dataset_->collate(indices, augment, epoch_seed_);
  return options_.pin_memory ? batch.pin_memory() : batch;
}

void DataLoader::worker_loop() {
  const int64_t total = num_batches();
  const int64_t window = options_.prefetch * std::max<int64_t>(1, options_.num_workers);
  for (;;) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] {
        return stopping_ || next_to_make_ >= total || next_to_make_ < next_to_return_ + window;
      });
      if (stopping_ || next_to_make_ >= total) return;
      b = next_to_make_++;
    }
    try {
      Batch batch = make_batch(b);
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(b, std::move(batch));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      failed_.emplace(b, std::current_exception());
    }
    cv_.notify_all();
  }
}

std::optional<Batch> DataLoader::next() {
  if (!started_) start_epoch(0);
  if (next_to_return_ >= num_batches()) return std::nullopt;
  const int64_t b = next_to_return_;
  if (workers_.empty()) {
    Batch batch = make_batch(b);  // advance only once the batch exists, as with workers
    ++next_to_return_;
    return batch;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return ready_.count(b) || failed_.count(b); });
  if (auto f = failed_.find(b); f != failed_.end()) {
    auto error = f->second;
    lock.unlock();
    stop_workers();
    std::rethrow_exception(error);
  }
  auto node = ready_.extract(b);
  ++next_to_return_;
  lock.unlock();
  cv_.notify_all();
  return std::move(node.mapped());
}

}  // namespace mmintent
