#pragma once
/// Deterministic seeds derived from the run's seed: every random stream (shuffling,
/// augmentation, each rank's dropout) is a function of the seed and its coordinates alone.

#include <cstdint>

namespace mmintent {

/// One round of splitmix64 (Steele, Lea and Flood, 2014): a bijective 64-bit mix, so nearby
/// inputs give unrelated outputs. Defined here, not in seed.cpp, so that mmintent_make_demo,
/// which links no mmintent library (it needs no LibTorch), uses this same definition.
constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/// A well-mixed 64-bit seed from (seed, epoch, index) (splitmix64, three rounds).
uint64_t mix_seed(uint64_t seed, uint64_t epoch, uint64_t index);

}  // namespace mmintent
