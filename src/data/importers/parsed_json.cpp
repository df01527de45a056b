#include "data/importers/parsed_json.h"

#include <iterator>

#include "data/importers/common.h"
#include "mmintent/error.h"

namespace mmintent::detail {
namespace {

using nlohmann::json;

/// A char iterator that records the furthest position the parser has read, so that the
/// parser callback knows where in the buffer each event happens.
class TrackingIterator {
 public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  TrackingIterator(const char* p, const char** furthest) : p_(p), furthest_(furthest) {}
  reference operator*() const { return *p_; }
  TrackingIterator& operator++() {
    ++p_;
    if (p_ > *furthest_) *furthest_ = p_;
    return *this;
  }
  TrackingIterator operator++(int) {
    TrackingIterator old = *this;
    ++*this;
    return old;
  }
  bool operator==(const TrackingIterator& other) const { return p_ == other.p_; }
  bool operator!=(const TrackingIterator& other) const { return p_ != other.p_; }

 private:
  const char* p_;
  const char** furthest_;
};

/// The reason part of a nlohmann parse error ("syntax error while parsing ...").
std::string parse_error_reason(const std::string& what) {
  const auto at = what.find("parse error");
  if (at != std::string::npos) {
    const auto colon = what.find(": ", at);
    if (colon != std::string::npos) return what.substr(colon + 2);
  }
  return what;
}

}  // namespace

ParsedJson parse_json(const std::string& path, const std::string& buffer, const OffsetMap& map) {
  ParsedJson parsed;
  const char* const begin = buffer.data();
  const char* furthest = begin;
  std::size_t last_event_end = 0;
  std::string current_key;
  std::string duplicate;
  std::size_t duplicate_offset = 0;
  auto start_after = [&](std::size_t pos) {  // first byte of the next token after `pos`
    while (pos < buffer.size() && (is_ascii_space(buffer[pos]) || buffer[pos] == ',' || buffer[pos] == ':')) ++pos;
    return pos;
  };
  const json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& value) {
    const auto here = static_cast<std::size_t>(furthest - begin);
    if (depth == 1 && event == json::parse_event_t::key) {
      current_key = value.get<std::string>();
      const std::size_t offset = start_after(last_event_end);
      if (!parsed.key_offsets.emplace(current_key, offset).second && duplicate.empty()) {
        duplicate = current_key;
        duplicate_offset = offset;
      }
      parsed.element_offsets[current_key].clear();
    } else if (depth == 2 && (event == json::parse_event_t::array_start ||
                              event == json::parse_event_t::object_start ||
                              event == json::parse_event_t::value)) {
      parsed.element_offsets[current_key].push_back(start_after(last_event_end));
    }
    last_event_end = here;
    return true;
  };
  try {
    parsed.doc = json::parse(TrackingIterator(begin, &furthest),
                             TrackingIterator(begin + buffer.size(), &furthest), callback);
  } catch (const json::parse_error& e) {
    const std::size_t at = e.byte > 0 ? e.byte - 1 : 0;
    throw DataError(path, line_of(buffer, at),
                    "invalid JSON at byte offset " + std::to_string(map.to_original(at)) + ": " +
                        parse_error_reason(e.what()));
  }
  if (!duplicate.empty()) {
    throw DataError(path, line_of(buffer, duplicate_offset),
                    "byte offset " + std::to_string(map.to_original(duplicate_offset)) +
                        ": top-level key '" + duplicate + "' appears twice");
  }
  return parsed;
}

[[noreturn]] void fail_record(const std::string& path, const std::string& buffer, const OffsetMap& map,
                              const ParsedJson& parsed, const std::string& key, std::size_t index,
                              const std::string& message) {
  std::size_t offset = 0;
  const auto it = parsed.element_offsets.find(key);
  if (it != parsed.element_offsets.end() && index < it->second.size()) offset = it->second[index];
  throw DataError(path, line_of(buffer, offset),
                  "byte offset " + std::to_string(map.to_original(offset)) + ": key '" + key +
                      "', record " + std::to_string(index + 1) + ": " + message);
}

}  // namespace mmintent::detail
