#pragma once
/// Data-parallel training across processes: the collectives the trainer needs, behind a small
/// interface that only knows LibTorch's tensor type. The implementation on PyTorch's c10d
/// (Gloo on CPU, NCCL on CUDA) is in distributed/process_group.h; the trainer sees only this.
///
/// Every rank must call the same collectives in the same order with tensors of the same
/// shapes; a rank that stops (or cannot be reached) makes the others fail with a
/// DistributedError within the configured timeout.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace mmintent {

/// The `distributed:` section of a config.
struct DistributedOptions {
  std::string backend = "auto";  ///< auto (NCCL for CUDA, Gloo for CPU) | gloo | nccl
  /// Seconds a rendezvous or a collective may wait for the other ranks before failing.
  double timeout_seconds = 300;
  /// Gradients are summed in buckets of about this many MiB (one collective per bucket).
  double bucket_mb = 25;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  /// "gloo" or "nccl".
  virtual std::string backend() const = 0;
  /// Sums a dense, contiguous tensor element-wise over all ranks, in place (one collective).
  virtual void all_reduce_sum(at::Tensor& tensor) = 0;
  /// Overwrites a dense, contiguous tensor with rank `root`'s values, in place.
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  /// Waits until every rank has reached this point.
  virtual void barrier() = 0;
};

/// Sums `values` over all ranks (in float64: counts below 2^53 stay exact).
std::vector<double> all_reduce_sum(Communicator& comm, const std::vector<double>& values);
/// Rank `root`'s `values` on every rank (all ranks must pass the same length).
std::vector<double> broadcast(Communicator& comm, const std::vector<double>& values, int root);
/// Rank `root`'s string on every rank (a tokenizer model, a file's bytes).
std::string broadcast_bytes(Communicator& comm, const std::string& data, int root);

/// Copies rank `root`'s parameters and buffers into every rank's module (flattened into
/// buckets of `bucket_bytes`, one collective each).
void broadcast_module(Communicator& comm, torch::nn::Module& module, int root = 0,
                      int64_t bucket_bytes = 25 << 20);
/// Replaces every floating-point buffer (batch-norm running statistics) by its mean over
/// the ranks; integer buffers (batch counters) are left as they are.
void average_buffers(Communicator& comm, torch::nn::Module& module);

/// Sums the gradients of a fixed list of parameters over all ranks, in place, bucketed: the
/// gradients are packed into a few flat buffers of about `bucket_bytes` (grouped by device
/// and dtype) so that a step costs one collective per bucket, not one per tensor. A
/// parameter without a gradient on this rank (unused this step, or an empty local batch)
/// contributes zeros. Optional `extra` scalars ride along in the last bucket and come back
/// summed: the step's loss and a stop request cost no collective of their own.
class GradientReducer {
 public:
  GradientReducer(Communicator& comm, std::vector<at::Tensor> parameters, int64_t bucket_bytes);
  /// Sums the gradients and `extra`; returns the summed extras.
  std::vector<double> reduce(const std::vector<double>& extra = {});
  /// Number of buckets (collectives per step).
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> members;  ///< indices into parameters_
    int64_t numel = 0;
  };
  Communicator& comm_;
  std::vector<at::Tensor> parameters_;
  std::vector<Bucket> buckets_;
};

}  // namespace mmintent
