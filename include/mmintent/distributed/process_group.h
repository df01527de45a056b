#pragma once
/// Joining a data-parallel run: rendezvous through a c10d TCPStore from the variables that
/// `torchrun` sets, then a c10d process group (Gloo for CPU tensors, NCCL for CUDA ones).
///
///   torchrun --no-python --nproc_per_node=2 ... ./mmintent train CONFIG
///
/// Multi-host runs use the same variables (each host's torchrun, or a scheduler, sets them).

#include "mmintent/distributed/communicator.h"

#include <c10/core/Device.h>

#include <memory>
#include <string>

namespace mmintent {

/// Where this process stands in the run, from the environment.
struct WorldInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  ///< index on this host; picks the GPU
  /// Processes on this host (LOCAL_WORLD_SIZE, which torchrun sets; 1 when unset): they share
  /// its cores.
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already serves the store on
  /// MASTER_PORT, so every rank (rank 0 too) joins it as a client.
  bool agent_store = false;
  bool distributed() const { return world_size > 1; }
};

/// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT and
/// TORCHELASTIC_USE_AGENT_STORE. Without WORLD_SIZE: a single process (world_size 1). Throws
/// mmintent::Error naming the variable when one is malformed, missing (RANK, MASTER_ADDR and
/// MASTER_PORT are needed when WORLD_SIZE > 1) or out of range.
WorldInfo world_from_env();

/// The device spec a rank uses: "auto" and "cuda" become "cuda:LOCAL_RANK" when CUDA is
/// available (one GPU per process); anything else is kept.
std::string rank_device(const std::string& spec, int local_rank);

/// The intra-op threads a rank uses: `configured` when it is > 0; 0 (one per core) becomes this
/// host's cores divided among its processes (at least 1). Logs the choice, and warns when the
/// layout oversubscribes the cores (local processes x (threads + loader workers) > cores).
int rank_threads(int64_t configured, int64_t loader_workers, const WorldInfo& world);

/// True when this build can create a process group for `device` (Gloo compiled in, or NCCL).
bool has_backend_for(const c10::Device& device, const std::string& backend = "auto");

/// Rendezvous and process group. Rank 0 serves the TCPStore unless torchrun's agent does.
/// Fails with DistributedError after options.timeout_seconds when the other ranks do not
/// all arrive. The backend "auto" is NCCL for a CUDA device (Gloo when this build has no
/// NCCL: tensors are then staged through host memory) and Gloo for the CPU.
/// Sets SIGPIPE to be ignored in this process (as Python does; c10d relies on it), so that a
/// peer that died is a DistributedError here, not a silent kill.
std::shared_ptr<Communicator> init_process_group(const WorldInfo& world,
                                                 const DistributedOptions& options,
                                                 const c10::Device& device);

}  // namespace mmintent
