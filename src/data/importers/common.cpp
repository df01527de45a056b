#include "data/importers/common.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>

#include "mmintent/core/seed.h"
#include "mmintent/error.h"

namespace mmintent {

std::vector<CountCheck> ImportSummary::count_differences() const {
  std::vector<CountCheck> differences;
  for (const auto& check : checks) {
    if (check.found != check.published) differences.push_back(check);
  }
  return differences;
}

namespace detail {

namespace fs = std::filesystem;
using nlohmann::json;

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string strip(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_ascii_space(s[b])) ++b;
  while (e > b && is_ascii_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::string describe(const json& value) {
  switch (value.type()) {
    case json::value_t::array:
      return "an array of " + std::to_string(value.size()) + " element" + (value.size() == 1 ? "" : "s");
    case json::value_t::object: return "an object";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return std::string("a boolean (") + (value.get<bool>() ? "true" : "false") + ")";
    case json::value_t::null: return "null";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number (" + value.dump() + ")";
    default: return "an unexpected value";
  }
}

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::vector<std::size_t> choose_sorted(std::size_t n, std::size_t k, std::uint64_t seed, std::uint64_t stream) {
  std::mt19937_64 engine(splitmix64(seed ^ splitmix64(stream)));
  auto below = [&engine](std::uint64_t bound) {  // unbiased: draws below 2^64 mod bound are rejected
    const std::uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const std::uint64_t r = engine();
      if (r >= threshold) return r % bound;
    }
  };
  std::vector<std::size_t> index(n);
  for (std::size_t i = 0; i < n; ++i) index[i] = i;
  for (std::size_t i = 0; i < k; ++i) {  // partial Fisher-Yates
    const auto j = i + static_cast<std::size_t>(below(n - i));
    std::swap(index[i], index[j]);
  }
  index.resize(k);
  std::sort(index.begin(), index.end());
  return index;
}

void write_manifests(const fs::path& out_dir, const Splits& splits, bool with_text, bool with_image,
                     ImportSummary& summary) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw DataError(out_dir.string(), 0, "cannot create the output folder: " + ec.message());
  std::array<fs::path, 3> temps, finals;
  auto remove_temps = [&temps]() {
    std::error_code ignored;
    for (const auto& t : temps) {
      if (!t.empty()) fs::remove(t, ignored);
    }
  };
  try {
    for (std::size_t s = 0; s < 3; ++s) {
      finals[s] = out_dir / (std::string(kSplitNames[s]) + ".jsonl");
      temps[s] = finals[s];
      temps[s] += ".tmp";
      std::ofstream out(temps[s], std::ios::binary | std::ios::trunc);
      if (!out) throw DataError(temps[s].string(), 0, std::string("cannot create: ") + std::strerror(errno));
      for (const auto& record : splits[s]) {
        nlohmann::ordered_json line;
        if (with_text) line["text"] = record.text;
        if (with_image) line["image"] = record.image;
        line["label"] = record.label;
        for (const auto& [key, value] : record.extra.items()) line[key] = value;
        out << line.dump() << '\n';
      }
      out.flush();
      if (!out) throw DataError(temps[s].string(), 0, std::string("write failed: ") + std::strerror(errno));
    }
    for (std::size_t s = 0; s < 3; ++s) {
      fs::rename(temps[s], finals[s], ec);
      if (ec) {
        throw DataError(finals[s].string(), 0, "cannot rename " + temps[s].string() + " into place: " + ec.message());
      }
    }
  } catch (...) {
    remove_temps();
    throw;
  }
  summary.out_dir = out_dir.string();
  for (const auto& f : finals) summary.manifests.push_back(f.string());
}

}  // namespace detail
}  // namespace mmintent
