#pragma once
/// Numeric precision of the forward passes: fp32, or bf16 mixed precision through LibTorch's
/// autocast (matrix products, convolutions and the LSTM/GRU in bfloat16; weights, gradients,
/// optimizer state, softmax and the loss stay fp32). Works on CPUs (fast where they have
/// AVX512-BF16 or AMX) and on CUDA GPUs, with LibTorch 1.13 and 2.x.

#include <c10/core/Device.h>

#include <string>

namespace mmintent {

enum class Precision { fp32, bf16 };

/// "fp32" or "bf16"; throws mmintent::Error for anything else.
Precision parse_precision(const std::string& name);
const char* to_string(Precision p);

/// While it lives, forward passes on this thread run under autocast to `precision` on
/// `device`'s type; fp32 changes nothing. Restores the previous autocast state on exit.
class AutocastGuard {
 public:
  AutocastGuard(const c10::Device& device, Precision precision);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool was_enabled_ = false;
  int previous_dtype_ = 0;  ///< at::ScalarType, kept as int to keep this header light
};

}  // namespace mmintent
