#include "mmintent/core/seed.h"

namespace mmintent {

uint64_t mix_seed(uint64_t seed, uint64_t epoch, uint64_t index) {
  auto splitmix = [](uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
  };
  return splitmix(splitmix(splitmix(seed) ^ epoch) ^ index);
}

}  // namespace mmintent
