#include "mmintent/data/importers.h"
#include "mmintent/data/manifest.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "data/idx.h"
#include "mmintent/core/seed.h"
#include "mmintent/error.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::array<const char*, 3> kSplitNames = {"train", "val", "test"};

// ---------------------------------------------------------------------------------------------
// Small helpers

std::string read_bytes(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw DataError(path.string(), 0, fs::exists(path, ec) ? "not a regular file" : "file not found");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path.string(), 0, std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) throw DataError(path.string(), 0, "read failed");
  return content.str();
}

/// 1-based line of the byte at `offset`.
long line_of(const std::string& bytes, std::size_t offset) {
  offset = std::min(offset, bytes.size());
  return 1 + static_cast<long>(std::count(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(offset), '\n'));
}

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string strip(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_ascii_space(s[b])) ++b;
  while (e > b && is_ascii_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::string hex_byte(unsigned value) {
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "0x%02X", value & 0xFFu);
  return buffer;
}

/// "an array of 3 elements", "a number (5)", ... for error messages.
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

// ---------------------------------------------------------------------------------------------
// Deterministic randomness (the same on every standard library: only mt19937_64 is used)

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

/// `k` distinct indices of 0..n-1, uniformly at random, sorted ascending (k <= n).
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

// ---------------------------------------------------------------------------------------------
// UTF-8 checking and repair


/// The code point of a CESU-8 surrogate pair (ED A0-AF xx ED B0-BF xx) at s[i], or 0.
std::uint32_t cesu8_pair_at(const std::string& s, std::size_t i) {
  if (i + 6 > s.size()) return 0;
  auto b = [&](std::size_t k) { return static_cast<unsigned>(static_cast<unsigned char>(s[i + k])); };
  const bool cont2 = b(2) >= 0x80 && b(2) <= 0xBF, cont5 = b(5) >= 0x80 && b(5) <= 0xBF;
  if (b(0) != 0xED || b(1) < 0xA0 || b(1) > 0xAF || !cont2) return 0;
  if (b(3) != 0xED || b(4) < 0xB0 || b(4) > 0xBF || !cont5) return 0;
  const std::uint32_t high = 0xD000u | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu);
  const std::uint32_t low = 0xD000u | ((b(4) & 0x3Fu) << 6) | (b(5) & 0x3Fu);
  return 0x10000u + ((high - 0xD800u) << 10) + (low - 0xDC00u);
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

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

/// Returns `bytes` as valid UTF-8 following the policy; fills `report` (first_offset is only
/// meaningful when something was re-decoded) and `map`.
std::string repair_utf8(const std::string& path, const std::string& bytes,
                        const SnipsImportOptions& options, RedecodedFile& report, OffsetMap& map) {
  report.file = path;
  std::string out;
  bool any = false;
  for (std::size_t i = 0; i < bytes.size();) {
    const std::size_t len = utf8_sequence_length(bytes, i);
    if (len > 0) {
      out.append(bytes, i, len);
      i += len;
      continue;
    }
    if (options.invalid_utf8 == SnipsImportOptions::InvalidUtf8::error) {
      throw DataError(path, line_of(bytes, i),
                      "invalid UTF-8 at byte offset " + std::to_string(i) + " (byte " +
                          hex_byte(static_cast<unsigned char>(bytes[i])) +
                          "); the 'decode' policy reads such bytes as Latin-1");
    }
    if (!any) report.first_offset = i;
    any = true;
    const std::size_t start = out.size();
    const std::uint32_t pair = options.join_surrogate_pairs ? cesu8_pair_at(bytes, i) : 0;
    if (pair != 0) {
      append_utf8(out, pair);
      map.add(start, out.size(), i, i + 6);
      ++report.surrogate_pairs;
      i += 6;
    } else {
      append_utf8(out, static_cast<unsigned char>(bytes[i]));  // Latin-1: byte b is U+00b
      map.add(start, out.size(), i, i + 1);
      ++report.latin1_bytes;
      i += 1;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// JSON with record offsets

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

/// A parsed file whose top level is meant to be an object of arrays.
struct ParsedJson {
  json doc;
  /// Top-level key -> byte offset (in the parsed buffer) where each element of its value
  /// starts, when that value is an array.
  std::map<std::string, std::vector<std::size_t>> element_offsets;
  std::map<std::string, std::size_t> key_offsets;
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

/// Parses `buffer` (the file's bytes, possibly repaired; `map` turns offsets back into file
/// offsets). Throws DataError for invalid JSON or a duplicated top-level key.
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

/// Throws DataError for element `index` (0-based) of top-level key `key`.
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

// ---------------------------------------------------------------------------------------------
// Output

struct OutRecord {
  std::string text;
  std::string image;
  std::string label;
};

using Splits = std::array<std::vector<OutRecord>, 3>;

/// Writes OUT_DIR/{train,val,test}.jsonl: all three to temporary files first, then renamed.
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

/// Fills summary.splits (per kind via `kind_of`) and num_labels.
template <typename KindOf>
void count_splits(const Splits& splits, KindOf kind_of, ImportSummary& summary) {
  std::set<std::string> labels;
  for (std::size_t s = 0; s < 3; ++s) {
    SplitCounts counts;
    counts.split = kSplitNames[s];
    counts.records = splits[s].size();
    for (const auto& record : splits[s]) {
      ++counts.by_kind[kind_of(record)];
      labels.insert(record.label);
    }
    summary.splits.push_back(std::move(counts));
  }
  summary.num_labels = labels.size();
}

std::size_t kind_count(const ImportSummary& summary, std::size_t split, const std::string& kind) {
  const auto& by_kind = summary.splits.at(split).by_kind;
  const auto it = by_kind.find(kind);
  return it == by_kind.end() ? 0 : it->second;
}

// ---------------------------------------------------------------------------------------------
// CLINC150

struct ClincPublished {
  const char* variant;
  std::array<std::size_t, 3> in_scope;
  std::array<std::size_t, 3> oos;
};

constexpr std::array<ClincPublished, 4> kClincPublished = {{
    {"full", {15000, 3000, 4500}, {100, 100, 1000}},
    {"small", {7500, 3000, 4500}, {100, 100, 1000}},
    {"imbalanced", {10525, 3000, 4500}, {100, 100, 1000}},
    {"oos_plus", {15000, 3000, 4500}, {250, 100, 1000}},
}};
constexpr std::size_t kClincIntents = 150;

}  // namespace

std::vector<CountCheck> ImportSummary::count_differences() const {
  std::vector<CountCheck> differences;
  for (const auto& check : checks) {
    if (check.found != check.published) differences.push_back(check);
  }
  return differences;
}

ImportSummary import_clinc150(const std::string& src_dir, const std::string& out_dir,
                              const Clinc150ImportOptions& options) {
  const ClincPublished* published = nullptr;
  for (const auto& p : kClincPublished) {
    if (options.variant == p.variant) published = &p;
  }
  if (published == nullptr) {
    throw Error("unknown CLINC150 variant '" + options.variant +
                "': expected full, small, imbalanced or oos_plus");
  }
  if (strip(options.oos_label).empty()) throw Error("the CLINC150 out-of-scope label must not be empty");

  const fs::path file = fs::path(src_dir) / ("data_" + options.variant + ".json");
  const std::string path = file.string();
  const std::string bytes = read_bytes(file);
  const OffsetMap no_edits;
  const ParsedJson parsed = parse_json(path, bytes, no_edits);
  if (!parsed.doc.is_object()) {
    throw DataError(path, 1, "expected a JSON object with keys train, val, test, oos_train, oos_val, "
                             "oos_test; found " + describe(parsed.doc));
  }
  const std::array<const char*, 6> keys = {"train", "val", "test", "oos_train", "oos_val", "oos_test"};
  for (const auto& [key, value] : parsed.doc.items()) {
    if (std::find_if(keys.begin(), keys.end(), [&](const char* k) { return key == k; }) == keys.end()) {
      const std::size_t offset = parsed.key_offsets.at(key);
      throw DataError(path, line_of(bytes, offset),
                      "byte offset " + std::to_string(offset) + ": unexpected key '" + key +
                          "'; expected train, val, test, oos_train, oos_val, oos_test");
    }
  }

  Splits splits;
  ImportSummary summary;
  summary.dataset = "clinc150";
  summary.kind = "scope";
  std::array<std::size_t, 3> oos_in_file{};
  for (std::size_t k = 0; k < keys.size(); ++k) {
    const std::string key = keys[k];
    const bool oos = k >= 3;
    const std::size_t split = k % 3;
    const auto it = parsed.doc.find(key);
    if (it == parsed.doc.end()) throw DataError(path, 0, "missing key '" + key + "'");
    if (!it->is_array()) {
      const std::size_t offset = parsed.key_offsets.at(key);
      throw DataError(path, line_of(bytes, offset),
                      "byte offset " + std::to_string(offset) + ": key '" + key +
                          "' should hold a list of [text, intent] pairs; found " + describe(*it));
    }
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& pair = (*it)[i];
      auto fail = [&](const std::string& message) { fail_record(path, bytes, no_edits, parsed, key, i, message); };
      if (!pair.is_array() || pair.size() != 2) {
        fail("expected a [text, intent] pair of 2 strings; found " + describe(pair));
      }
      if (!pair[0].is_string()) fail("the text (element 1) should be a string; found " + describe(pair[0]));
      if (!pair[1].is_string()) fail("the intent (element 2) should be a string; found " + describe(pair[1]));
      const auto& text = pair[0].get_ref<const std::string&>();
      const auto& intent = pair[1].get_ref<const std::string&>();
      if (strip(text).empty()) fail("the text is empty");
      if (strip(intent).empty()) fail("the intent is empty");
      if (oos && intent != "oos") fail("out-of-scope records should have the intent 'oos'; found '" + intent + "'");
      if (!oos && intent == options.oos_label) {
        fail("the in-scope intent '" + intent + "' equals the out-of-scope label; choose another one");
      }
      if (oos) {
        ++oos_in_file[split];
        if (!options.include_oos) continue;
      }
      splits[split].push_back({text, "", oos ? options.oos_label : intent});
    }
  }

  write_manifests(out_dir, splits, /*with_text=*/true, /*with_image=*/false, summary);
  const std::string oos_label = options.oos_label;
  count_splits(splits, [&oos_label](const OutRecord& r) { return r.label == oos_label ? "oos" : "in_scope"; },
               summary);
  std::set<std::string> intents;
  for (const auto& split : splits) {
    for (const auto& r : split) {
      if (r.label != oos_label) intents.insert(r.label);
    }
  }
  for (std::size_t s = 0; s < 3; ++s) {
    summary.checks.push_back({std::string(kSplitNames[s]) + " in-scope", kind_count(summary, s, "in_scope"),
                              published->in_scope[s]});
  }
  if (options.include_oos) {
    for (std::size_t s = 0; s < 3; ++s) {
      summary.checks.push_back({std::string(kSplitNames[s]) + " out-of-scope", kind_count(summary, s, "oos"),
                                published->oos[s]});
    }
  }
  summary.checks.push_back({"in-scope intents", intents.size(), kClincIntents});
  summary.notes.push_back("variant '" + options.variant + "' read from " + path);
  if (options.include_oos) {
    summary.notes.push_back("out-of-scope samples (oos_train/oos_val/oos_test) appended to train/val/test "
                            "with label '" + oos_label + "'");
  } else {
    summary.notes.push_back("out-of-scope samples left out (" + std::to_string(oos_in_file[0]) + "/" +
                            std::to_string(oos_in_file[1]) + "/" + std::to_string(oos_in_file[2]) +
                            " in the file)");
  }
  return summary;
}

// ---------------------------------------------------------------------------------------------
// SNIPS

ImportSummary import_snips(const std::string& src_dir, const std::string& out_dir,
                           const SnipsImportOptions& options) {
  const fs::path dir(src_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw DataError(src_dir, 0, "not a folder (expected the SNIPS files)");
  std::set<std::string> train_intents, validate_intents;
  const std::regex train_name("train_(.+)_full\\.json"), validate_name("validate_(.+)\\.json");
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    std::smatch m;
    if (std::regex_match(name, m, train_name)) {
      train_intents.insert(m[1]);
    } else if (std::regex_match(name, m, validate_name)) {
      validate_intents.insert(m[1]);
    }
  }
  if (ec) throw DataError(src_dir, 0, "cannot list the folder: " + ec.message());
  if (train_intents.empty()) throw DataError(src_dir, 0, "no train_<Intent>_full.json files found");
  for (const auto& intent : train_intents) {
    if (validate_intents.count(intent) == 0) {
      throw DataError((dir / ("validate_" + intent + ".json")).string(), 0,
                      "file not found (train_" + intent + "_full.json has no validate file)");
    }
  }
  for (const auto& intent : validate_intents) {
    if (train_intents.count(intent) == 0) {
      throw DataError((dir / ("train_" + intent + "_full.json")).string(), 0,
                      "file not found (validate_" + intent + ".json has no train file)");
    }
  }

  ImportSummary summary;
  summary.dataset = "snips";
  summary.kind = "intent";
  std::size_t inner_breaks = 0;
  // Reads one file: the utterances of `intent`, in file order.
  auto read_file = [&](const fs::path& file, const std::string& intent) {
    const std::string path = file.string();
    const std::string bytes = read_bytes(file);
    RedecodedFile report;
    OffsetMap map;
    const std::string buffer = repair_utf8(path, bytes, options, report, map);
    if (report.latin1_bytes + report.surrogate_pairs > 0) summary.redecoded.push_back(report);
    const ParsedJson parsed = parse_json(path, buffer, map);
    if (!parsed.doc.is_object() || parsed.doc.size() != 1 || !parsed.doc.contains(intent)) {
      std::string found = describe(parsed.doc);
      if (parsed.doc.is_object()) {
        found = "keys";
        for (const auto& [key, value] : parsed.doc.items()) found += " '" + key + "'";
        if (parsed.doc.empty()) found = "an empty object";
      }
      throw DataError(path, 1, "expected an object with the single key '" + intent + "'; found " + found);
    }
    const json& list = parsed.doc.at(intent);
    if (!list.is_array()) {
      const std::size_t offset = parsed.key_offsets.at(intent);
      throw DataError(path, line_of(buffer, offset),
                      "byte offset " + std::to_string(map.to_original(offset)) + ": key '" + intent +
                          "' should hold a list of utterances; found " + describe(list));
    }
    std::vector<std::string> utterances;
    utterances.reserve(list.size());
    for (std::size_t i = 0; i < list.size(); ++i) {
      const json& record = list[i];
      auto fail = [&](const std::string& message) { fail_record(path, buffer, map, parsed, intent, i, message); };
      if (!record.is_object()) fail("expected an object with a \"data\" list; found " + describe(record));
      const auto data = record.find("data");
      if (data == record.end()) fail("missing \"data\" (the list of text pieces)");
      if (!data->is_array()) fail("\"data\" should be a list of text pieces; found " + describe(*data));
      std::string text;
      for (std::size_t p = 0; p < data->size(); ++p) {
        const json& piece = (*data)[p];
        const std::string where = "\"data\" piece " + std::to_string(p + 1);
        if (!piece.is_object()) fail(where + " should be an object; found " + describe(piece));
        const auto piece_text = piece.find("text");
        if (piece_text == piece.end()) fail(where + " has no \"text\"");
        if (!piece_text->is_string()) fail(where + ": \"text\" should be a string; found " + describe(*piece_text));
        text += piece_text->get_ref<const std::string&>();
      }
      text = strip(text);
      if (text.empty()) fail("the utterance is empty");
      if (text.find_first_of("\n\r\t") != std::string::npos) ++inner_breaks;
      utterances.push_back(std::move(text));
    }
    return utterances;
  };

  // Read and check every file before anything else.
  std::map<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>> files;
  std::size_t train_file_total = 0, validate_total = 0;
  for (const auto& intent : train_intents) {
    auto& [train, validate] = files[intent];
    train = read_file(dir / ("train_" + intent + "_full.json"), intent);
    validate = read_file(dir / ("validate_" + intent + ".json"), intent);
    train_file_total += train.size();
    validate_total += validate.size();
  }
  Splits splits;
  for (const auto& [intent, utterances] : files) {
    const auto& [train, validate] = utterances;
    if (options.val_per_intent >= train.size()) {
      throw Error("SNIPS intent " + intent + ": --val-per-intent " + std::to_string(options.val_per_intent) +
                  " leaves no training utterance (train_" + intent + "_full.json has " +
                  std::to_string(train.size()) + ")");
    }
    const auto val_index = choose_sorted(train.size(), options.val_per_intent, options.seed, fnv1a(intent));
    std::size_t next_val = 0;
    for (std::size_t i = 0; i < train.size(); ++i) {
      const bool is_val = next_val < val_index.size() && val_index[next_val] == i;
      if (is_val) ++next_val;
      splits[is_val ? 1 : 0].push_back({train[i], "", intent});
    }
    for (const auto& text : validate) splits[2].push_back({text, "", intent});
  }

  write_manifests(out_dir, splits, /*with_text=*/true, /*with_image=*/false, summary);
  count_splits(splits, [](const OutRecord& r) { return r.label; }, summary);
  summary.checks.push_back({"train-file utterances (train + val)", train_file_total, 13784});
  summary.checks.push_back({"validate utterances (test)", validate_total, 700});
  summary.checks.push_back({"intents", train_intents.size(), 7});
  summary.notes.push_back("val = " + std::to_string(options.val_per_intent) +
                          " utterances per intent held out of the train files at random (seed " +
                          std::to_string(options.seed) + "); test = the validate files");
  for (const auto& r : summary.redecoded) {
    std::string what;
    if (r.surrogate_pairs > 0) {
      what += std::to_string(r.surrogate_pairs) + " CESU-8 surrogate pair" + (r.surrogate_pairs == 1 ? "" : "s") +
              " (6 bytes each) joined into one code point each";
    }
    if (r.latin1_bytes > 0) {
      if (!what.empty()) what += " and ";
      what += std::to_string(r.latin1_bytes) + " byte" + (r.latin1_bytes == 1 ? "" : "s") + " read as Latin-1";
    }
    summary.notes.push_back(r.file + " is not valid UTF-8: " + what + "; first invalid byte at offset " +
                            std::to_string(r.first_offset));
  }
  if (inner_breaks > 0) {
    summary.notes.push_back(std::to_string(inner_breaks) +
                            " utterances keep a line break or tab inside the text (only outer whitespace is stripped)");
  }
  return summary;
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST

namespace {

constexpr int kSide = detail::kIdxImageSide;
constexpr std::size_t kPixels = detail::kIdxImagePixels;

/// The shared IDX reader, with its errors as DataError (file, what is wrong).
detail::IdxImages read_idx_pair(const fs::path& images_path, const fs::path& labels_path) {
  try {
    return detail::read_idx_images(images_path.string(), labels_path.string());
  } catch (const detail::IdxError& e) {
    throw DataError(e.file(), 0, e.reason());
  }
}

bool is_digits_png(const std::string& name) {
  if (name.size() <= 4 || name.compare(name.size() - 4, 4, ".png") != 0) return false;
  return std::all_of(name.begin(), name.end() - 4, [](char c) { return c >= '0' && c <= '9'; });
}

/// Writes the PNGs of one split into OUT_DIR/images/<split>/ and returns its records.
std::vector<OutRecord> write_images(const fs::path& out_dir, const char* split, const detail::IdxImages& set,
                                    const std::vector<std::size_t>& indices) {
  const fs::path image_dir = out_dir / "images" / split;
  std::error_code ec;
  fs::create_directories(image_dir, ec);
  if (ec) throw DataError(image_dir.string(), 0, "cannot create the folder: " + ec.message());
  for (const auto& entry : fs::directory_iterator(image_dir, ec)) {
    if (is_digits_png(entry.path().filename().string())) {
      std::error_code remove_ec;
      fs::remove(entry.path(), remove_ec);
      if (remove_ec) throw DataError(entry.path().string(), 0, "cannot remove an old image: " + remove_ec.message());
    }
  }
  if (ec) throw DataError(image_dir.string(), 0, "cannot list the folder: " + ec.message());
  int width = 5;
  while (indices.size() > 1 && static_cast<int>(std::to_string(indices.size() - 1).size()) > width) ++width;
  const auto& names = fashion_mnist_class_names();
  std::vector<OutRecord> records;
  records.reserve(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    std::string name = std::to_string(i);
    name = std::string(static_cast<std::size_t>(std::max(0, width - static_cast<int>(name.size()))), '0') + name + ".png";
    const fs::path png = image_dir / name;
    const cv::Mat image(kSide, kSide, CV_8UC1, const_cast<std::uint8_t*>(set.pixels.data() + indices[i] * kPixels));
    bool ok = false;
    try {
      ok = cv::imwrite(png.string(), image);
    } catch (const cv::Exception& e) {
      throw DataError(png.string(), 0, std::string("cannot write the PNG: ") + e.what());
    }
    if (!ok) throw DataError(png.string(), 0, "cannot write the PNG");
    records.push_back({"", std::string("images/") + split + "/" + name, names[set.labels[indices[i]]]});
  }
  return records;
}

}  // namespace

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"t-shirt_top", "trouser", "pullover", "dress", "coat",
                                                 "sandal",      "shirt",   "sneaker",  "bag",   "ankle_boot"};
  return names;
}

ImportSummary import_fashion_mnist(const std::string& src_dir, const std::string& out_dir,
                                   const FashionMnistImportOptions& options) {
  const fs::path src(src_dir);
  const detail::IdxImages train = read_idx_pair(src / "train-images-idx3-ubyte.gz", src / "train-labels-idx1-ubyte.gz");
  const detail::IdxImages test = read_idx_pair(src / "t10k-images-idx3-ubyte.gz", src / "t10k-labels-idx1-ubyte.gz");
  if (options.val_size >= train.count) {
    throw Error("Fashion-MNIST: --val-size " + std::to_string(options.val_size) +
                " leaves no training image (the training set has " + std::to_string(train.count) + ")");
  }
  const auto val_index = choose_sorted(train.count, options.val_size, options.seed, fnv1a("fashion-mnist/val"));
  std::vector<std::size_t> train_index, test_index(test.count);
  train_index.reserve(train.count - val_index.size());
  for (std::size_t i = 0, v = 0; i < train.count; ++i) {
    if (v < val_index.size() && val_index[v] == i) {
      ++v;
    } else {
      train_index.push_back(i);
    }
  }
  for (std::size_t i = 0; i < test.count; ++i) test_index[i] = i;

  // All input is good: from here on the output folder changes. Old manifests go first so that
  // none of them can point at a half-rewritten image folder if writing fails.
  const fs::path out(out_dir);
  std::error_code ec;
  for (const char* split : kSplitNames) {
    const fs::path manifest = out / (std::string(split) + ".jsonl");
    fs::remove(manifest, ec);
    if (ec) throw DataError(manifest.string(), 0, "cannot remove the old manifest: " + ec.message());
  }
  Splits splits;
  splits[0] = write_images(out, "train", train, train_index);
  splits[1] = write_images(out, "val", train, val_index);
  splits[2] = write_images(out, "test", test, test_index);

  ImportSummary summary;
  summary.dataset = "fashion-mnist";
  summary.kind = "class";
  write_manifests(out, splits, /*with_text=*/false, /*with_image=*/true, summary);
  count_splits(splits, [](const OutRecord& r) { return r.label; }, summary);
  summary.checks.push_back({"train images (train + val)", train.count, 60000});
  summary.checks.push_back({"test images", test.count, 10000});
  summary.checks.push_back({"classes", summary.num_labels, 10});
  summary.notes.push_back("val = " + std::to_string(options.val_size) +
                          " training images chosen at random (seed " + std::to_string(options.seed) +
                          "); test = the t10k images; PNGs under " + (out / "images").string());
  return summary;
}

}  // namespace mmintent
