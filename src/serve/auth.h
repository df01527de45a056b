#pragma once
/// API keys for the server: a file of hashed keys, one lowercase hex SHA-256 per line. Internal.

#include "mmintent/core/digest.h"

#include <string>
#include <vector>

namespace mmintent::serve {

using mmintent::sha256_file_hex;  // core/digest.h
using mmintent::sha256_hex;

class ApiKeys {
 public:
  ApiKeys() = default;
  /// Reads `path`: one 64-digit hex SHA-256 per line, blank lines and '#' comments allowed.
  /// Throws Error naming the file and line of a malformed entry, or when it holds no key;
  /// `key` is the config key that named the file (for the messages).
  static ApiKeys load(const std::string& path, const std::string& key = "serve.api_keys_file");
  bool empty() const { return hashes_.empty(); }
  std::size_t size() const { return hashes_.size(); }
  /// True when `authorization` is "Bearer KEY" and KEY's hash is listed. The comparison takes
  /// the same time whatever the key; the key itself is never stored or logged.
  bool accepts(const std::string& authorization) const;
  /// True when a key is in both sets (an API key must not also be an admin key).
  bool overlaps(const ApiKeys& other) const;

 private:
  std::vector<std::string> hashes_;
};

}  // namespace mmintent::serve
