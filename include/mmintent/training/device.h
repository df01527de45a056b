#pragma once
/// Device and thread selection from the config's strings.

#include <c10/core/Device.h>

#include <string>

namespace mmintent {

/// "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N". Throws mmintent::Error
/// when the string is malformed or names a GPU this process cannot use.
c10::Device resolve_device(const std::string& spec);

/// Sets LibTorch's intra-op thread count (0 = one per hardware core) and the BLAS's (OpenBLAS
/// through its setter; BLIS through BLIS_NUM_THREADS, unless set, which BLIS reads at its first
/// matrix product: call this before any); returns the count in force. LibTorch here starts with
/// 1 thread, so this is always called.
int configure_threads(int intra_op_threads);

}  // namespace mmintent
