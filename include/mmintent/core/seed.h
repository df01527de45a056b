#pragma once
/// Deterministic seeds derived from the run's seed: every random stream (shuffling,
/// augmentation, each rank's dropout) is a function of the seed and its coordinates alone.

#include <cstdint>

namespace mmintent {

/// A well-mixed 64-bit seed from (seed, epoch, index) (splitmix64, three rounds).
uint64_t mix_seed(uint64_t seed, uint64_t epoch, uint64_t index);

}  // namespace mmintent
