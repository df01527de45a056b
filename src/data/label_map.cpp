#include "mmintent/data/label_map.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "data/lines.h"
#include "mmintent/data/manifest.h"
#include "mmintent/error.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;

std::string read_label_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw DataError(path, 0, "cannot open label map: file not found");
  if (fs::is_directory(path, ec)) throw DataError(path, 0, "cannot open label map: is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path, 0, std::string("cannot open label map: ") + std::strerror(errno));
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) throw DataError(path, 0, "cannot read label map: I/O error");
  return os.str();
}

/// 1-based line where each element of the top-level JSON array in `text` starts (the text is
/// known to be valid JSON), in one pass: per-element scans made large label maps quadratic.
std::vector<long> json_element_lines(const std::string& text) {
  std::vector<long> lines;
  long line = 1;
  int depth = 0;
  bool in_string = false;
  bool expect_element = false;  // just after '[' or ',' at depth 1
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') ++line;
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    if (expect_element && depth == 1 && c != ']') lines.push_back(line);
    expect_element = false;
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      ++depth;
      expect_element = depth == 1 && c == '[';
    } else if (c == ']' || c == '}') {
      --depth;
    } else if (c == ',' && depth == 1) {
      expect_element = true;
    }
  }
  return lines;
}

/// Splits "file:123" into ("file", 123); anything else is (where, 0).
std::pair<std::string, long> split_where(const std::string& where) {
  const auto colon = where.rfind(':');
  if (colon == std::string::npos || colon + 1 >= where.size() || colon + 10 < where.size()) {
    return {where, 0};
  }
  for (std::size_t i = colon + 1; i < where.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(where[i]))) return {where, 0};
  }
  return {where.substr(0, colon), std::stol(where.substr(colon + 1))};
}

}  // namespace

LabelMap::LabelMap(std::vector<std::string> names) : names_(std::move(names)) {
  index_.reserve(names_.size());
  for (std::size_t i = 0; i < names_.size(); ++i)
    index_.emplace(names_[i], static_cast<int64_t>(i));
}

LabelMap LabelMap::from_labels(const std::vector<std::string>& labels) {
  std::vector<std::string> names(labels);
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) throw Error("label map: label #" + std::to_string(i) + " is empty");
    const std::size_t bad = find_invalid_utf8(names[i]);
    if (bad != std::string::npos) {
      throw Error("label map: label #" + std::to_string(i) + " is not valid UTF-8 (byte offset " +
                  std::to_string(bad) + ")");
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return LabelMap(std::move(names));
}

LabelMap LabelMap::load(const std::string& path) {
  const std::string data = read_label_file(path);
  std::vector<std::string> names;
  std::unordered_map<std::string, long> first_line;  // for duplicate messages
  auto add = [&](std::string name, long line) {
    if (name.empty()) throw DataError(path, line, "empty label");
    const std::size_t bad = find_invalid_utf8(name);
    if (bad != std::string::npos) {
      throw DataError(path, line,
                      "label is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
    }
    const auto [it, inserted] = first_line.emplace(name, line);
    if (!inserted) {
      throw DataError(
          path, line,
          "duplicate label '" + name + "' (first at line " + std::to_string(it->second) + ")");
    }
    names.push_back(std::move(name));
  };

  std::string ext = fs::path(path).extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == ".json") {
    nlohmann::json array;
    try {
      array = nlohmann::json::parse(data);
    } catch (const nlohmann::json::parse_error& e) {
      throw DataError(path, detail::line_of(data, e.byte > 0 ? e.byte - 1 : 0),
                      std::string("not valid JSON: ") + e.what());
    } catch (const nlohmann::json::exception& e) {  // out_of_range: a number like 1e999
      throw DataError(path, 0, std::string("not valid JSON: ") + e.what());
    }
    if (!array.is_array()) {
      throw DataError(path, 0,
                      std::string("expected a JSON array of strings, found ") + array.type_name());
    }
    const std::vector<long> element_lines = json_element_lines(data);
    for (std::size_t i = 0; i < array.size(); ++i) {
      const long line = i < element_lines.size() ? element_lines[i] : 0;
      if (!array[i].is_string()) {
        throw DataError(
            path, line,
            "label #" + std::to_string(i) + " must be a string, found " + array[i].type_name());
      }
      add(array[i].get<std::string>(), line);
    }
  } else {
    const std::size_t start = data.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
    detail::for_each_line(data, start,
                          [&](long line, std::string& name) { add(std::move(name), line); });
  }
  if (names.empty()) throw DataError(path, 0, "label map has no labels");
  return LabelMap(std::move(names));
}

void LabelMap::save(const std::string& path) const {
  const std::string text = nlohmann::json(names_).dump(2) + "\n";
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      throw Error("cannot write label map '" + path + "': cannot create '" + tmp +
                  "': " + std::strerror(errno));
    }
    out << text;
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error("cannot write label map '" + path + "': write to '" + tmp + "' failed");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw Error("cannot write label map '" + path + "': rename failed: " + ec.message());
  }
}

int64_t LabelMap::find(const std::string& label) const {
  const auto it = index_.find(label);
  return it == index_.end() ? -1 : it->second;
}

int64_t LabelMap::index(const std::string& label, const std::string& where) const {
  const int64_t i = find(label);
  if (i >= 0) return i;
  std::string known;
  const std::size_t shown = std::min<std::size_t>(names_.size(), 20);
  for (std::size_t k = 0; k < shown; ++k) known += (k ? ", " : "") + ("'" + names_[k] + "'");
  if (shown < names_.size()) known += ", ...";
  auto [file, line] = split_where(where);
  throw DataError(file, line,
                  "unknown label '" + label + "' (the label map has " +
                      std::to_string(names_.size()) + " labels: " + known + ")");
}

const std::string& LabelMap::name(int64_t index) const {
  if (index < 0 || index >= size()) {
    throw std::out_of_range("label index " + std::to_string(index) + " is outside [0, " +
                            std::to_string(size()) + ")");
  }
  return names_[static_cast<std::size_t>(index)];
}

}  // namespace mmintent
