#include "mmintent/training/device.h"

#include "mmintent/error.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <dlfcn.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdlib>
#include <string>
#include <thread>

namespace mmintent {

c10::Device resolve_device(const std::string& spec) {
  const bool have_cuda = torch::cuda::is_available();
  if (spec == "auto") return have_cuda ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    if (!have_cuda) {
      throw Error("device '" + spec +
                  "' requested, but this LibTorch build or machine has no CUDA device "
                  "(use device: auto or cpu)");
    }
    int index = 0;
    if (spec.size() > 4) {
      const std::string digits = spec.substr(5);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) {
        throw Error("device '" + spec + "' is malformed: expected cuda:N with N a number");
      }
      index = std::stoi(digits);
    }
    const auto count = static_cast<int>(torch::cuda::device_count());
    if (index >= count) {
      throw Error("device '" + spec + "' requested, but only " + std::to_string(count) +
                  " CUDA device(s) are visible");
    }
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw Error("device '" + spec + "' is not one of auto, cpu, cuda, cuda:N");
}

namespace {
// LibTorch's float32 matrix products (at::mm, linear, the RNNs) go to the system BLAS, which
// keeps its own thread count: at::set_num_threads does not reach it. OpenBLAS has a setter.
// BLIS (what scripts/setup.sh selects) reads BLIS_NUM_THREADS, else OMP_NUM_THREADS, once at
// its first call, and runs 1 thread when neither is set: half of a 2-core machine's rate for
// large products (bench/RESULTS.md section 3).
void configure_blas_threads(int n) {
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(n);
  }
  if (std::getenv("BLIS_NUM_THREADS") == nullptr) {
    setenv("BLIS_NUM_THREADS", std::to_string(n).c_str(), /*overwrite=*/0);
  }
}
}  // namespace

int configure_threads(int intra_op_threads) {
  int n = intra_op_threads;
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  configure_blas_threads(n);
  return at::get_num_threads();
}

bool configure_allocator(bool keep_freed) {
#if defined(__GLIBC__)
  if (!keep_freed) return false;
  // 32 MiB is the largest mmap threshold glibc accepts; blocks above it stay mmap'ed.
  return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
#else
  (void)keep_freed;
  return false;
#endif
}

}  // namespace mmintent
