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

/// With glibc's malloc, `keep_freed` (runtime.keep_freed_memory) keeps freed blocks of up to
/// 32 MiB in the heap for reuse (mallopt: mmap threshold 32 MiB, trim threshold 1 GiB) instead
/// of returning each to the system and taking it back, zeroed, page by page, at the next
/// batch: a training step allocates and frees its activations every time (the demo: 3.0 s of
/// 13.8 s in the kernel, bench/RESULTS.md). Process-wide and permanent; the peak resident
/// memory can grow by what the heap keeps. Returns whether it took effect (false elsewhere or
/// when `keep_freed` is false).
bool configure_allocator(bool keep_freed);

}  // namespace mmintent
