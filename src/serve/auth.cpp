#include "serve/auth.h"

#include "mmintent/error.h"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace mmintent::serve {
namespace {

bool is_hex_digest(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

ApiKeys ApiKeys::load(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  if (!in) throw Error(key + ": cannot read " + path);
  ApiKeys keys;
  std::string line;
  long number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (const auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;
    const auto last = line.find_last_not_of(" \t\r");
    std::string entry = line.substr(first, last - first + 1);
    for (char& c : entry) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!is_hex_digest(entry)) {
      throw Error(key + ": " + path + ":" + std::to_string(number) +
                  ": not a SHA-256 hex digest (64 hex digits); store the hash of a key, e.g. "
                  "printf %s KEY | sha256sum, never the key itself");
    }
    keys.hashes_.push_back(entry);  // (a move here trips GCC 12's -Warray-bounds, a false positive)
  }
  if (keys.hashes_.empty()) throw Error(key + ": " + path + " holds no key (one SHA-256 hex digest per line)");
  return keys;
}

bool ApiKeys::accepts(const std::string& authorization) const {
  static const std::string scheme = "Bearer ";
  if (authorization.size() <= scheme.size() || authorization.compare(0, scheme.size(), scheme) != 0) {
    return false;
  }
  const std::string digest = sha256_hex(authorization.substr(scheme.size()));
  // Compare against every key without an early exit, so the time says nothing about the key.
  unsigned char match = 0;
  for (const auto& h : hashes_) {
    unsigned char diff = 0;
    for (std::size_t i = 0; i < 64; ++i) diff |= static_cast<unsigned char>(h[i] ^ digest[i]);
    match |= static_cast<unsigned char>(diff == 0);
  }
  return match != 0;
}

bool ApiKeys::overlaps(const ApiKeys& other) const {
  for (const auto& h : hashes_) {
    if (std::find(other.hashes_.begin(), other.hashes_.end(), h) != other.hashes_.end()) return true;
  }
  return false;
}

}  // namespace mmintent::serve
