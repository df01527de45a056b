#pragma once
/// Dynamic micro-batching: predict requests from many connections are queued and grouped into
/// one forward pass of up to max_batch inputs. The worker waits (at most max_wait) for a batch
/// to fill only while another request is on its way (announced: being read and checked by a
/// handler thread), so a lone request never waits. The queue is bounded: a request that would
/// overfill it is refused at once. Internal.

#include "mmintent/inference/predictor.h"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mmintent::serve {

/// Thrown by MicroBatcher::submit when the queue is full (the server answers 503).
struct QueueFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct BatcherOptions {
  int64_t max_batch = 16;
  std::chrono::microseconds max_wait{2000};
  int64_t max_queue = 256;  ///< inputs waiting at most
};

class MicroBatcher {
 public:
  /// `on_batch(size)` is called (on the worker thread) with the number of inputs of each
  /// forward pass, e.g. for a histogram.
  MicroBatcher(BatcherOptions options, std::function<void(int64_t)> on_batch = {});
  /// Announces a request for its lifetime, or until end().
  class Arrival {
   public:
    explicit Arrival(MicroBatcher& batcher) : batcher_(&batcher) { batcher.announce(); }
    ~Arrival() { end(); }
    Arrival(const Arrival&) = delete;
    Arrival& operator=(const Arrival&) = delete;
    void end() {
      if (batcher_) batcher_->withdraw();
      batcher_ = nullptr;
    }

   private:
    MicroBatcher* batcher_;
  };

  /// Finishes every queued request, then stops the worker.
  ~MicroBatcher();
  MicroBatcher(const MicroBatcher&) = delete;
  MicroBatcher& operator=(const MicroBatcher&) = delete;

  /// Queues `inputs` (all or none) for `predictor`; the predictions come back with at least
  /// `top_k` intents each (the largest top_k of their pass: the caller cuts its own). A
  /// request's inputs stay together in one forward pass (a request of more than max_batch
  /// inputs is a pass of its own). Throws QueueFull when the queue cannot take them all. The
  /// future throws what predict_batch threw.
  std::future<std::vector<Prediction>> submit(std::shared_ptr<const Predictor> predictor,
                                              std::vector<PredictInput> inputs, int64_t top_k);
  int64_t queued() const;

  /// A request is on its way (a handler started reading it): the worker may wait for it.
  /// Each announce must be ended by a withdraw once the request is submitted or refused
  /// (Arrival does both).
  void announce();
  void withdraw();

 private:
  struct Job {
    std::shared_ptr<const Predictor> predictor;
    std::vector<PredictInput> inputs;
    int64_t top_k;
    std::promise<std::vector<Prediction>> promise;
  };
  void work();
  void run(std::vector<Job>& jobs);

  BatcherOptions options_;
  std::function<void(int64_t)> on_batch_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  int64_t queued_inputs_ = 0;
  int64_t arriving_ = 0;  ///< announced requests not yet submitted or withdrawn
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace mmintent::serve
