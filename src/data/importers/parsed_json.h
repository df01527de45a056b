#pragma once
/// JSON files whose top level is an object of arrays (CLINC150, SNIPS), parsed so that an
/// error can name the byte offset and line of the record at fault. Internal to libmmintent.

#include <algorithm>
#include <cstddef>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mmintent::detail {

/// Maps offsets in a repaired buffer back to offsets in the original file.
class OffsetMap {
 public:
  void add(std::size_t repaired_start, std::size_t repaired_end, std::size_t original_start,
           std::size_t original_end) {
    delta_ += static_cast<long long>(original_end - original_start) -
              static_cast<long long>(repaired_end - repaired_start);
    edits_.push_back({repaired_start, repaired_end, original_start, delta_});
  }
  std::size_t to_original(std::size_t repaired) const {
    auto it = std::upper_bound(edits_.begin(), edits_.end(), repaired,
                               [](std::size_t r, const Edit& e) { return r < e.repaired_start; });
    if (it == edits_.begin()) return repaired;
    --it;
    if (repaired < it->repaired_end) return it->original_start;
    return static_cast<std::size_t>(static_cast<long long>(repaired) + it->delta_after);
  }

 private:
  struct Edit {
    std::size_t repaired_start, repaired_end, original_start;
    long long delta_after;  ///< original - repaired after this edit
  };
  std::vector<Edit> edits_;
  long long delta_ = 0;
};

/// A parsed file whose top level is meant to be an object of arrays.
struct ParsedJson {
  nlohmann::json doc;
  /// Top-level key -> byte offset (in the parsed buffer) where each element of its value
  /// starts, when that value is an array.
  std::map<std::string, std::vector<std::size_t>> element_offsets;
  std::map<std::string, std::size_t> key_offsets;
};

/// Parses `buffer` (the file's bytes, possibly repaired; `map` turns offsets back into file
/// offsets). Throws DataError for invalid JSON or a duplicated top-level key.
ParsedJson parse_json(const std::string& path, const std::string& buffer, const OffsetMap& map);

/// Throws DataError for element `index` (0-based) of top-level key `key`.
[[noreturn]] void fail_record(const std::string& path, const std::string& buffer, const OffsetMap& map,
                              const ParsedJson& parsed, const std::string& key, std::size_t index,
                              const std::string& message);

}  // namespace mmintent::detail
