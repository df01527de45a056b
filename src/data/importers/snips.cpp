// SNIPS 2017 (Coucke et al., 2018): see import_snips in mmintent/data/importers.h.

#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "data/importers/common.h"
#include "data/importers/parsed_json.h"
#include "mmintent/data/importers.h"
#include "mmintent/data/manifest.h"
#include "mmintent/core/files.h"
#include "mmintent/error.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace detail;  // the importers' shared helpers

// ---------------------------------------------------------------------------------------------
// UTF-8 checking and repair

std::string hex_byte(unsigned value) {
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "0x%02X", value & 0xFFu);
  return buffer;
}

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

}  // namespace

namespace detail {

Splits read_snips(const std::string& src_dir, const SnipsImportOptions& options, ImportSummary& summary) {
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

  std::size_t inner_breaks = 0;
  // Reads one file: the utterances of `intent`, in file order.
  auto read_file = [&](const fs::path& file, const std::string& intent) {
    const std::string path = file.string();
    const std::string bytes = mmintent::read_file(file, "SNIPS file");
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
  return splits;
}

}  // namespace detail

ImportSummary import_snips(const std::string& src_dir, const std::string& out_dir,
                           const SnipsImportOptions& options) {
  ImportSummary summary;
  summary.dataset = "snips";
  summary.kind = "intent";
  const Splits splits = detail::read_snips(src_dir, options, summary);
  write_manifests(out_dir, splits, /*with_text=*/true, /*with_image=*/false, summary);
  count_splits(splits, [](const OutRecord& r) { return r.label; }, summary);
  return summary;
}

}  // namespace mmintent
