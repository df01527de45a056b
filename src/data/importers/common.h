#pragma once
/// Helpers shared by the data-set importers (src/data/importers/*.cpp): reading the input,
/// wording errors, deterministic sampling, and writing and counting the three manifests.
/// Internal to libmmintent.

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "data/lines.h"  // line_of
#include "mmintent/data/importers.h"

namespace mmintent::detail {

constexpr std::array<const char*, 3> kSplitNames = {"train", "val", "test"};

// ---------------------------------------------------------------------------------------------
// Small helpers

bool is_ascii_space(char c);

/// `s` without ASCII whitespace at either end.
std::string strip(const std::string& s);

/// "an array of 3 elements", "a number (5)", ... for error messages.
std::string describe(const nlohmann::json& value);

// ---------------------------------------------------------------------------------------------
// Deterministic randomness (the same on every standard library: only mt19937_64 is used)

/// FNV-1a hash of `text`: a stable stream id from a name.
std::uint64_t fnv1a(const std::string& text);

/// `k` distinct indices of 0..n-1, uniformly at random, sorted ascending (k <= n).
std::vector<std::size_t> choose_sorted(std::size_t n, std::size_t k, std::uint64_t seed, std::uint64_t stream);

// ---------------------------------------------------------------------------------------------
// Output

struct OutRecord {
  std::string text;
  std::string image;
  std::string label;
  /// More fields, written after the label in this order (e.g. a spoken record's audio path).
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

using Splits = std::array<std::vector<OutRecord>, 3>;

/// Writes OUT_DIR/{train,val,test}.jsonl: all three to temporary files first, then renamed.
void write_manifests(const std::filesystem::path& out_dir, const Splits& splits, bool with_text, bool with_image,
                     ImportSummary& summary);

/// SNIPS's three splits as import_snips writes them (snips.cpp), read and checked; adds the
/// count checks and notes to `summary`. Shared with import_spoken_snips.
Splits read_snips(const std::string& src_dir, const SnipsImportOptions& options, ImportSummary& summary);

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

}  // namespace mmintent::detail
