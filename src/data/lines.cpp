#include "data/lines.h"

#include <algorithm>
#include <cctype>

#include "mmintent/error.h"

namespace mmintent::detail {

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; });
}

long line_of(const std::string& text, std::size_t offset) {
  offset = std::min(offset, text.size());
  return 1 + static_cast<long>(
                 std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(offset), '\n'));
}

void for_each_line(const std::string& data, std::size_t start,
                   const std::function<void(long line, std::string& text)>& fn) {
  std::size_t pos = start;
  long line_no = 0;
  while (pos < data.size()) {
    ++line_no;
    std::size_t end = data.find('\n', pos);
    if (end == std::string::npos) end = data.size();
    std::string line = data.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (is_blank(line)) continue;
    fn(line_no, line);
  }
}

nlohmann::json parse_json_line(const std::string& path, long line, const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999
    throw DataError(path, line, std::string("not valid JSON: ") + e.what());
  }
}

}  // namespace mmintent::detail
