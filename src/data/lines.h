#pragma once
/// Reading line-based files (JSONL manifests and feedback logs, plain-text label maps) the one
/// way, so that every reader skips the same lines and numbers them the same in its errors.
/// Internal to libmmintent.

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace mmintent::detail {

/// True when `s` is empty or holds only whitespace (std::isspace).
bool is_blank(const std::string& s);

/// 1-based line of the byte at `offset` in `text` (the last line past the end).
long line_of(const std::string& text, std::size_t offset);

/// Calls `fn(line, text)` for each line of `data` from byte `start` on that is not blank.
/// Lines end at '\n' (a '\r' before it is dropped); `line` is 1-based and counts blank lines
/// too, so it is the line number in the file. `fn` may change `text` (it is a copy).
void for_each_line(const std::string& data, std::size_t start,
                   const std::function<void(long line, std::string& text)>& fn);

/// One JSONL line parsed. Throws DataError(path, line, "not valid JSON: ...") for invalid JSON
/// and for a number beyond the range of a double (nlohmann's out_of_range, not a parse_error).
nlohmann::json parse_json_line(const std::string& path, long line, const std::string& text);

}  // namespace mmintent::detail
