#include "serve/batcher.h"

#include <algorithm>

namespace mmintent::serve {

MicroBatcher::MicroBatcher(BatcherOptions options, std::function<void(int64_t)> on_batch)
    : options_(options), on_batch_(std::move(on_batch)) {
  options_.max_batch = std::max<int64_t>(1, options_.max_batch);
  worker_ = std::thread([this] { work(); });
}

MicroBatcher::~MicroBatcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  worker_.join();
}

int64_t MicroBatcher::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queued_inputs_;
}

void MicroBatcher::announce() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++arriving_;
}

void MicroBatcher::withdraw() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    arriving_ = std::max<int64_t>(0, arriving_ - 1);
  }
  wake_.notify_one();
}

std::future<std::vector<Prediction>> MicroBatcher::submit(std::shared_ptr<const Predictor> predictor,
                                                          std::vector<PredictInput> inputs,
                                                          int64_t top_k) {
  Job job{std::move(predictor), std::move(inputs), top_k, {}};
  auto future = job.promise.get_future();
  const auto n = static_cast<int64_t>(job.inputs.size());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw QueueFull("the server is shutting down");
    if (queued_inputs_ + n > options_.max_queue) {
      throw QueueFull("the queue is full (" + std::to_string(queued_inputs_) + " inputs waiting, serve.max_queue = " +
                      std::to_string(options_.max_queue) + ")");
    }
    queued_inputs_ += n;
    queue_.push_back(std::move(job));
  }
  wake_.notify_one();
  return future;
}

void MicroBatcher::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, nothing left
    // Wait for the batch to fill while more requests are on their way, at most max_wait after
    // the oldest request arrived here.
    const auto deadline = std::chrono::steady_clock::now() + options_.max_wait;
    // (No pass is in flight here: queued_inputs_ counts exactly the queue's inputs.)
    while (!stopping_ && arriving_ > 0 && queued_inputs_ < options_.max_batch &&
           wake_.wait_until(lock, deadline) != std::cv_status::timeout) {
    }
    // Take whole requests up to max_batch inputs (at least one request), same predictor only.
    std::vector<Job> jobs;
    int64_t n = 0;
    while (!queue_.empty()) {
      auto& next = queue_.front();
      const auto size = static_cast<int64_t>(next.inputs.size());
      if (!jobs.empty() && (n + size > options_.max_batch || next.predictor != jobs.front().predictor)) break;
      n += size;
      jobs.push_back(std::move(next));
      queue_.pop_front();
    }
    lock.unlock();
    run(jobs);
    lock.lock();
    queued_inputs_ -= n;
  }
}

void MicroBatcher::run(std::vector<Job>& jobs) {
  std::vector<PredictInput> all;
  int64_t top_k = 1;
  for (auto& j : jobs) {
    top_k = std::max(top_k, j.top_k);
    for (auto& in : j.inputs) all.push_back(std::move(in));
  }
  if (on_batch_) on_batch_(static_cast<int64_t>(all.size()));
  std::vector<Prediction> predictions;
  try {
    predictions = jobs.front().predictor->predict_batch(all, top_k);
  } catch (...) {
    for (auto& j : jobs) j.promise.set_exception(std::current_exception());
    return;
  }
  auto at = predictions.begin();
  for (auto& j : jobs) {
    std::vector<Prediction> mine(std::make_move_iterator(at),
                                 std::make_move_iterator(at + static_cast<std::ptrdiff_t>(j.inputs.size())));
    at += static_cast<std::ptrdiff_t>(j.inputs.size());
    j.promise.set_value(std::move(mine));
  }
}

}  // namespace mmintent::serve
