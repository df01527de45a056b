#include "mmintent/distributed/process_group.h"

#include "mmintent/core/log.h"
#include "mmintent/error.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

// c10d ships with LibTorch's headers; ProcessGroupGloo.hpp declares nothing unless
// USE_C10D_GLOO is defined, and needs Gloo's own headers (Debian: libgloo-dev).
#if __has_include(<torch/csrc/distributed/c10d/TCPStore.hpp>)
#define MMINTENT_HAVE_C10D 1
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>  // the collectives' options, Gloo or not
#if __has_include(<gloo/config.h>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#define MMINTENT_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(MMINTENT_WITH_NCCL)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

#include <csignal>
#include <chrono>
#include <cstdlib>
#include <algorithm>
#include <limits>
#include <thread>

namespace mmintent {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

int env_int(const char* name, int fallback, bool required, int lo, int hi) {
  const std::string v = env(name);
  if (v.empty()) {
    if (required) {
      throw DistributedError(std::string("environment variable ") + name +
                             " is not set; it is needed when WORLD_SIZE > 1 (torchrun sets it)");
    }
    return fallback;
  }
  size_t used = 0;
  long value = 0;
  try {
    value = std::stol(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || value < lo || value > hi) {
    throw DistributedError(std::string("environment variable ") + name + "='" + v +
                           "' is not a whole number in [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "]");
  }
  return static_cast<int>(value);
}

std::string first_line(const std::string& s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

[[maybe_unused]] bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

#if MMINTENT_HAVE_C10D
/// Over a c10d process group or backend (ProcessGroupGloo, ProcessGroupNCCL): LibTorch 1.13
/// derives them from ProcessGroup, 2.x from Backend; both have these calls.
template <class Group>
class C10dCommunicator : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<Group> group, std::string backend, int rank,
                   int world_size, std::chrono::milliseconds timeout, bool stage_on_host)
      : group_(std::move(group)),
        backend_(std::move(backend)),
        rank_(rank),
        world_size_(world_size),
        timeout_(timeout),
        stage_on_host_(stage_on_host) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return backend_; }

  void all_reduce_sum(at::Tensor& tensor) override {
    run("all-reduce", tensor, [&](std::vector<at::Tensor>& t) {
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      o.timeout = timeout_;
      return group_->allreduce(t, o);
    });
  }

  void broadcast(at::Tensor& tensor, int root) override {
    run("broadcast", tensor, [&](std::vector<at::Tensor>& t) {
      c10d::BroadcastOptions o;
      o.rootRank = root;
      o.timeout = timeout_;
      return group_->broadcast(t, o);
    });
  }

  void barrier() override {
    try {
      c10d::BarrierOptions o;
      o.timeout = timeout_;
      group_->barrier(o)->wait(timeout_);
    } catch (const std::exception& e) {
      throw failure("barrier", e);
    }
  }

 private:
  template <class Op>
  void run(const char* what, at::Tensor& tensor, Op&& op) {
    // Gloo reduces host memory: a CUDA tensor is staged through it when there is no NCCL.
    const bool stage = stage_on_host_ && tensor.is_cuda();
    std::vector<at::Tensor> t{stage ? tensor.to(at::kCPU) : tensor};
    try {
      op(t)->wait(timeout_);
    } catch (const std::exception& e) {
      throw failure(what, e);
    }
    if (stage) tensor.copy_(t[0]);
  }

  DistributedError failure(const char* what, const std::exception& e) const {
    return DistributedError(
        "rank " + std::to_string(rank_) + " of " + std::to_string(world_size_) + ": " + what +
        " failed: " + first_line(e.what()) +
        ". Another rank stopped or could not be reached within distributed.timeout_seconds (" +
        std::to_string(timeout_.count() / 1000) + " s); see that rank's log for the cause");
  }

  c10::intrusive_ptr<Group> group_;
  std::string backend_;
  int rank_, world_size_;
  std::chrono::milliseconds timeout_;
  bool stage_on_host_;
};
#endif

std::string choose_backend(const c10::Device& device, const std::string& backend) {
  if (backend == "gloo" || backend == "nccl") return backend;
  if (backend != "auto") {
    throw DistributedError("distributed.backend '" + backend + "' is not one of auto, gloo, nccl");
  }
#if defined(MMINTENT_WITH_NCCL)
  if (device.is_cuda()) return "nccl";
#endif
  (void)device;
  return "gloo";
}

}  // namespace

WorldInfo world_from_env() {
  WorldInfo w;
  w.world_size = env_int("WORLD_SIZE", 1, false, 1, 1 << 20);
  if (w.world_size == 1) return w;
  w.rank = env_int("RANK", 0, true, 0, w.world_size - 1);
  w.local_rank = env_int("LOCAL_RANK", 0, false, 0, 1 << 20);
  w.local_world_size = env_int("LOCAL_WORLD_SIZE", 1, false, 1, w.world_size);
  w.master_addr = env("MASTER_ADDR");
  if (w.master_addr.empty()) {
    throw DistributedError("environment variable MASTER_ADDR is not set; it is needed when "
                           "WORLD_SIZE > 1 (the host of rank 0; torchrun sets it)");
  }
  w.master_port = env_int("MASTER_PORT", 0, true, 1, 65535);
  const std::string agent = env("TORCHELASTIC_USE_AGENT_STORE");
  w.agent_store = agent == "True" || agent == "true" || agent == "1";
  return w;
}

std::string rank_device(const std::string& spec, int local_rank) {
  if ((spec == "auto" || spec == "cuda") && torch::cuda::is_available()) {
    const int count = static_cast<int>(torch::cuda::device_count());
    if (local_rank >= count) {
      throw DistributedError("LOCAL_RANK " + std::to_string(local_rank) + " has no GPU of its own: " +
                             std::to_string(count) + " visible; start at most that many processes per host");
    }
    return "cuda:" + std::to_string(local_rank);
  }
  return spec;
}

int rank_threads(int64_t configured, int64_t loader_workers, const WorldInfo& world) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int local = std::max(1, world.local_world_size);
  const int threads = configured > 0 ? static_cast<int>(configured) : std::max(1, cores / local);
  if (configured <= 0 && world.rank == 0) {
    log::info("distributed", "runtime.threads 0: " + std::to_string(threads) + " per process (" +
                                 std::to_string(cores) + " cores, " + std::to_string(local) +
                                 " processes on this host)");
  }
  const int64_t wanted = static_cast<int64_t>(local) * (threads + loader_workers);
  if (wanted > cores && world.local_rank == 0) {
    log::warn("distributed", "oversubscribed: " + std::to_string(local) + " processes x (" +
                                 std::to_string(threads) + " threads + " + std::to_string(loader_workers) +
                                 " loader workers) on " + std::to_string(cores) +
                                 " cores; set runtime.threads: 0 (cores / processes) or lower "
                                 "data.loader.num_workers");
  }
  return threads;
}

bool has_backend_for(const c10::Device& device, const std::string& backend) {
  const std::string chosen = choose_backend(device, backend);
  (void)chosen;  // unused in a build with neither backend
#if defined(MMINTENT_WITH_NCCL)
  if (chosen == "nccl") return true;
#endif
#if MMINTENT_HAVE_GLOO
  if (chosen == "gloo") return true;
#endif
  return false;
}

std::shared_ptr<Communicator> init_process_group(const WorldInfo& world,
                                                 const DistributedOptions& options,
                                                 const c10::Device& device) {
  if (options.timeout_seconds <= 0) throw DistributedError("distributed.timeout_seconds must be > 0");
  const std::string backend = choose_backend(device, options.backend);
  if (!has_backend_for(device, backend)) {
    throw DistributedError("this build of mmintent has no c10d " + backend +
                           " backend (Gloo needs LibTorch's c10d headers and Gloo's, Debian's "
                           "libgloo-dev; NCCL needs a CUDA LibTorch and nccl.h)");
  }
  if (backend == "nccl" && !device.is_cuda()) {
    throw DistributedError("distributed.backend nccl needs a CUDA device (runtime.device is " +
                           device.str() + "); use gloo for the CPU");
  }
#if MMINTENT_HAVE_C10D
  // A peer that died leaves sockets whose next write raises SIGPIPE, which would kill this
  // process silently (exit 141) instead of failing the collective with a clear error. Python
  // ignores SIGPIPE at start-up, which is what c10d expects; so does a process joining here.
  std::signal(SIGPIPE, SIG_IGN);
  const auto timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::min(options.timeout_seconds, 1e9) * 1000));
  const bool serve = world.rank == 0 && !world.agent_store;
  log::info("distributed", "rank " + std::to_string(world.rank) + " of " +
                               std::to_string(world.world_size) + " (local rank " +
                               std::to_string(world.local_rank) + "): joining " +
                               world.master_addr + ":" + std::to_string(world.master_port) +
                               (serve ? " (serving the store)" : "") + ", backend " + backend);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(world.master_port);
    so.isServer = serve;
    so.numWorkers = world.world_size;
    so.waitWorkers = false;
    so.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(world.master_addr, so);
    // Under torchrun a restarted worker group must not read the previous attempt's keys.
    const std::string attempt = env("TORCHELASTIC_RESTART_COUNT");
    store = c10::make_intrusive<c10d::PrefixStore>(
        "mmintent/attempt_" + (attempt.empty() ? std::string("0") : attempt), tcp);
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(world.rank) + ": cannot " +
                           (serve ? "serve" : "reach") + " the rendezvous store at " +
                           world.master_addr + ":" + std::to_string(world.master_port) + ": " +
                           first_line(e.what()) + " (MASTER_ADDR / MASTER_PORT; " +
                           "distributed.timeout_seconds " + std::to_string(options.timeout_seconds) + ")");
  }
  std::shared_ptr<Communicator> comm;
  try {
#if defined(MMINTENT_WITH_NCCL)
    if (backend == "nccl") {
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, world.rank, world.world_size, o);
      comm = std::make_shared<C10dCommunicator<c10d::ProcessGroupNCCL>>(
          group, backend, world.rank, world.world_size, timeout, /*stage_on_host=*/false);
    }
#endif
#if MMINTENT_HAVE_GLOO
    if (backend == "gloo") {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      // Loopback runs bind to loopback; otherwise GLOO_SOCKET_IFNAME (as in PyTorch) or the
      // address this host's name resolves to.
      const std::string ifname = env("GLOO_SOCKET_IFNAME");
      if (!ifname.empty()) {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(world.master_addr)) {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      o->threads = 2;
      auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, world.rank, world.world_size, o);
      comm = std::make_shared<C10dCommunicator<c10d::ProcessGroupGloo>>(
          group, backend, world.rank, world.world_size, timeout, /*stage_on_host=*/true);
    }
#endif
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(world.rank) + ": the " + backend +
                           " process group could not form with " + std::to_string(world.world_size) +
                           " ranks within " + std::to_string(options.timeout_seconds) + " s: " +
                           first_line(e.what()) + " (did every rank start, with the same WORLD_SIZE?)");
  }
  if (!comm) throw DistributedError("no c10d process group for backend " + backend);
  comm->barrier();  // every rank has joined
  return comm;
#else
  (void)world;
  throw DistributedError("this LibTorch has no c10d headers: multi-process training is unavailable");
#endif
}

}  // namespace mmintent
