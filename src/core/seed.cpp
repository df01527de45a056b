#include "mmintent/core/seed.h"

namespace mmintent {

uint64_t mix_seed(uint64_t seed, uint64_t epoch, uint64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index);
}

}  // namespace mmintent
