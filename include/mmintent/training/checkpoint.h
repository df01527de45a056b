#pragma once
/// Checkpoints: model weights, optimizer state, trainer state and RNG state in one file,
/// written atomically (temporary file, fsync, rename) and loadable on any device.

#include "mmintent/training/early_stopping.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace mmintent {

/// Named parameters and buffers of a module, in registration order.
using StateDict = std::vector<std::pair<std::string, at::Tensor>>;

/// A detached copy of the module's parameters and buffers (on the CPU when `to_cpu`).
StateDict copy_state(const torch::nn::Module& module, bool to_cpu = false);
/// Copies `state` into the module, checking every name and shape.
void load_state(torch::nn::Module& module, const StateDict& state, const std::string& origin);

/// Where a run stands; everything besides weights that resuming needs.
struct TrainingState {
  int64_t epochs_completed = 0;
  int64_t global_step = 0;  ///< optimizer steps taken
  int64_t world_size = 1;   ///< processes of the data-parallel run that wrote it
  EarlyStopping::State early_stopping;
};

struct CheckpointData {
  TrainingState state;
  StateDict best;  ///< best weights so far (may be empty)
};

/// Writes `path` atomically. `optimizer` and `best` may be null; RNG state is always saved.
void save_checkpoint(const std::string& path, const torch::nn::Module& model,
                     const torch::optim::Optimizer* optimizer, const TrainingState& state,
                     const StateDict* best, const c10::Device& device);

/// Loads `path` onto `device`: weights into `model`, optimizer state into `optimizer` (if
/// given and present), and restores the RNG state when `restore_rng`. Throws CheckpointError
/// naming the file when it is missing, truncated or from another architecture.
CheckpointData load_checkpoint(const std::string& path, torch::nn::Module& model,
                               torch::optim::Optimizer* optimizer, const c10::Device& device,
                               bool restore_rng);

/// What warm_start copied.
struct WarmStart {
  int64_t tensors = 0;  ///< tensors copied
  int64_t values = 0;   ///< their elements
  std::vector<std::string> skipped;  ///< without prefixes: the model's tensors the file lacks or shapes differently
};

/// Copies into `model` the weights of the checkpoint `path` (e.g. a run's model.pt) under each
/// of `prefixes` (e.g. "audio_encoder"): every model tensor whose name starts with "prefix." (or
/// is the prefix) must be in the file with the same shape. Empty `prefixes`: every tensor whose
/// name and shape match. Throws CheckpointError naming the file and the tensor, or the prefix
/// that names no part of the model.
WarmStart warm_start(torch::nn::Module& model, const std::string& path, const std::vector<std::string>& prefixes);

}  // namespace mmintent
