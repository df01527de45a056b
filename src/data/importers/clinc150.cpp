// CLINC150 (Larson et al., 2019): see import_clinc150 in mmintent/data/importers.h.

#include <algorithm>
#include <array>
#include <filesystem>
#include <set>
#include <string>

#include "data/importers/common.h"
#include "data/importers/parsed_json.h"
#include "mmintent/data/importers.h"
#include "mmintent/core/files.h"
#include "mmintent/error.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace detail;  // the importers' shared helpers

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

std::size_t kind_count(const ImportSummary& summary, std::size_t split, const std::string& kind) {
  const auto& by_kind = summary.splits.at(split).by_kind;
  const auto it = by_kind.find(kind);
  return it == by_kind.end() ? 0 : it->second;
}

}  // namespace

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
  const std::string bytes = read_file(file, "CLINC150 file");
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

}  // namespace mmintent
