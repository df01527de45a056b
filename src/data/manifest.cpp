#include "mmintent/data/manifest.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "data/lines.h"
#include "mmintent/core/files.h"
#include "mmintent/error.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;

/// Stands in for invalid UTF-8 bytes of a JSONL line so that nlohmann::json can still parse
/// it and we can report the offset inside the decoded text (DEL is legal inside JSON strings).
constexpr char kInvalidByteMarker = '\x7F';


using detail::is_blank;

std::string trim_spaces(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}


ManifestFormat format_from_extension(const std::string& path) {
  const std::string ext = lower(fs::path(path).extension().string());
  if (ext == ".jsonl" || ext == ".json") return ManifestFormat::jsonl;
  if (ext == ".csv") return ManifestFormat::csv;
  if (ext == ".tsv") return ManifestFormat::tsv;
  throw DataError(path, 0,
                  "cannot tell the manifest format from the extension '" + ext +
                      "': expected .jsonl, .json, .csv or .tsv (or set the format explicitly)");
}

/// A field as found in one record: nullopt when the key/column is absent; "" for JSON null.
using RawField = std::optional<std::string>;

/// Turns raw fields into a Record, applying the requirements in `options`. Throws DataError
/// (record-level) on a violation.
class RecordBuilder {
 public:
  RecordBuilder(const std::string& path, const ManifestReadOptions& options)
      : path_(path), options_(options), base_dir_(fs::path(path).parent_path()) {}

  /// `marker_is_invalid`: the JSONL line had invalid bytes replaced by kInvalidByteMarker.
  Record build(const RawField& text, const RawField& image, const RawField& label, long line,
               bool marker_is_invalid = false) const {
    const ManifestFields& f = options_.fields;
    Record r;
    r.line = line;
    if (!f.text.empty()) {
      if (!text) {
        if (!options_.allow_missing_text) fail(line, "missing field '" + f.text + "' (text)");
      } else {
        check_utf8(*text, f.text, "text", line, marker_is_invalid);
        if (!is_blank(*text)) {
          r.text = *text;
        } else if (!options_.allow_missing_text) {
          fail(line, "empty text in field '" + f.text + "'");
        }
      }
    }
    if (!f.image.empty()) {
      if (!image) {
        if (!options_.allow_missing_image) fail(line, "missing field '" + f.image + "' (image)");
      } else if (image->empty()) {
        if (!options_.allow_missing_image)
          fail(line, "empty image path in field '" + f.image + "'");
      } else {
        check_utf8(*image, f.image, "image path", line, marker_is_invalid);
        r.image = resolve(*image);
      }
    }
    if (!f.label.empty()) {
      if (!label) {
        if (options_.require_label) fail(line, "missing field '" + f.label + "' (label)");
      } else if (label->empty()) {
        if (options_.require_label) fail(line, "empty label in field '" + f.label + "'");
      } else {
        check_utf8(*label, f.label, "label", line, marker_is_invalid);
        r.label = *label;
      }
    }
    return r;
  }

  /// Sets record r's plug-in values (ManifestFields::plugins): `values` by modality name.
  void add_plugins(Record& r, const std::map<std::string, RawField>& values, long line,
                   bool marker_is_invalid = false) const {
    for (const auto& [modality, field] : options_.fields.plugins) {
      const auto it = values.find(modality);
      const RawField value = it == values.end() ? RawField() : it->second;
      if (!value || is_blank(*value)) {
        if (!options_.allow_missing_plugins.count(modality)) {
          fail(line, value ? "empty value in field '" + field + "' (" + modality + ")"
                           : "missing field '" + field + "' (" + modality + ")");
        }
        continue;
      }
      check_utf8(*value, field, modality.c_str(), line, marker_is_invalid);
      r.inputs[modality] = options_.path_inputs.count(modality) ? resolve(*value) : *value;
    }
  }

  [[noreturn]] void fail(long line, const std::string& message) const {
    throw DataError(path_, line, message);
  }

 private:
  void check_utf8(const std::string& value, const std::string& field, const char* what, long line,
                  bool marker_is_invalid) const {
    std::size_t offset = find_invalid_utf8(value);
    if (offset == std::string::npos && marker_is_invalid) offset = value.find(kInvalidByteMarker);
    if (offset != std::string::npos) {
      fail(line, std::string(what) + " in field '" + field + "' is not valid UTF-8 (byte offset " +
                     std::to_string(offset) + " in the " + what + ")");
    }
  }

  std::string resolve(const std::string& image) const {
    const fs::path p(image);
    if (p.is_absolute() || base_dir_.empty()) return image;
    return (base_dir_ / p).string();
  }

  const std::string& path_;
  const ManifestReadOptions& options_;
  fs::path base_dir_;
};

/// Runs `body` for one record; in skip mode a DataError it throws is recorded instead.
template <typename Body>
void guarded(Manifest& manifest, bool skip, Body&& body) {
  if (!skip) {
    body();
    return;
  }
  try {
    body();
  } catch (const DataError& e) {
    manifest.skipped.emplace_back(e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// JSONL

RawField json_field(const nlohmann::json& object, const std::string& name, bool integer_ok,
                    const RecordBuilder& builder, long line) {
  if (name.empty()) return std::nullopt;
  const auto it = object.find(name);
  if (it == object.end()) return std::nullopt;
  if (it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (integer_ok && it->is_number_integer()) {
    return it->is_number_unsigned() ? std::to_string(it->get<std::uint64_t>())
                                    : std::to_string(it->get<std::int64_t>());
  }
  builder.fail(line, "field '" + name + "' must be a string" +
                         (integer_ok ? std::string(" or an integer") : std::string()) + ", found " +
                         it->type_name());
}

/// How far from 1 the probabilities of a soft label may sum (they are then normalised).
constexpr double kSoftLabelTolerance = 1e-3;

using SoftLabel = std::vector<std::pair<std::string, double>>;

/// Reads a soft label {"intent": probability, ...} found in field `field`. Throws DataError
/// (record-level) for an empty object, an empty or non-UTF-8 intent, a probability that is not
/// a finite number >= 0, or probabilities not summing to 1 within kSoftLabelTolerance.
SoftLabel soft_label_from_json(const nlohmann::json& object, const std::string& field,
                               const RecordBuilder& builder, long line, bool marker_is_invalid) {
  const std::string what = "soft label in field '" + field + "'";
  if (object.empty()) {
    builder.fail(line, what + " is an empty object; expected {\"intent\": probability, ...}");
  }
  SoftLabel out;
  double sum = 0;
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string& intent = it.key();
    if (intent.empty()) builder.fail(line, what + " has an empty intent name");
    std::size_t bad = find_invalid_utf8(intent);
    if (bad == std::string::npos && marker_is_invalid) bad = intent.find(kInvalidByteMarker);
    if (bad != std::string::npos) {
      builder.fail(line, what + ": an intent name is not valid UTF-8 (byte offset " +
                             std::to_string(bad) + " in the name)");
    }
    if (!it->is_number()) {
      builder.fail(line, what + ": the probability of '" + intent + "' must be a number, found " +
                             it->type_name());
    }
    const double p = it->get<double>();
    if (!std::isfinite(p) || p < 0) {
      builder.fail(line, what + ": the probability of '" + intent + "' must be >= 0, found " +
                             it->dump());
    }
    sum += p;
    out.emplace_back(intent, p);
  }
  if (!(std::abs(sum - 1.0) <= kSoftLabelTolerance)) {
    std::ostringstream os;
    os.precision(6);
    os << sum;
    builder.fail(line, what + ": the probabilities sum to " + os.str() +
                           ", expected 1 (within 0.001)");
  }
  for (auto& entry : out) entry.second /= sum;
  return out;
}

/// The most probable intent of a soft label (the first on ties).
std::string most_probable(const SoftLabel& soft) {
  const auto best = std::max_element(soft.begin(), soft.end(), [](const auto& a, const auto& b) {
    return a.second < b.second;
  });
  return best->first;
}

void read_jsonl(const std::string& path, const std::string& data,
                const ManifestReadOptions& options, Manifest& manifest, long line_offset = 0) {
  const bool skip = options.on_bad_record == "skip";
  RecordBuilder builder(path, options);
  const ManifestFields& f = options.fields;
  detail::for_each_line(data, 0, [&](long line_no, std::string& line) {
    line_no += line_offset;
    guarded(manifest, skip, [&] {
      // Replace invalid UTF-8 bytes by a marker so the JSON parser accepts the line and the
      // offending field (and the offset inside its decoded value) can be named.
      bool had_invalid = false;
      const bool had_marker = line.find(kInvalidByteMarker) != std::string::npos;
      std::size_t first_invalid = std::string::npos;
      for (std::size_t i = 0; i < line.size();) {
        const std::size_t len = utf8_sequence_length(line, i);
        if (len == 0) {
          if (!had_invalid) first_invalid = i;
          had_invalid = true;
          line[i] = kInvalidByteMarker;
          ++i;
        } else {
          i += len;
        }
      }
      if (had_invalid && had_marker) {
        builder.fail(line_no, "line is not valid UTF-8 (byte offset " +
                                  std::to_string(first_invalid) + " in the line)");
      }
      const nlohmann::json object = detail::parse_json_line(path, line_no, line);
      if (!object.is_object()) {
        builder.fail(line_no, std::string("expected a JSON object, found ") + object.type_name());
      }
      const RawField text = json_field(object, f.text, false, builder, line_no);
      const RawField image = json_field(object, f.image, false, builder, line_no);
      SoftLabel soft;
      RawField label;
      if (const auto it = f.label.empty() ? object.end() : object.find(f.label);
          it != object.end() && it->is_object()) {
        soft = soft_label_from_json(*it, f.label, builder, line_no, had_invalid);
        label = most_probable(soft);
      } else {
        label = json_field(object, f.label, true, builder, line_no);
      }
      Record record = builder.build(text, image, label, line_no, had_invalid);
      record.soft_label = std::move(soft);
      if (!f.plugins.empty()) {
        std::map<std::string, RawField> values;
        for (const auto& [modality, field] : f.plugins) {
          const auto it = object.find(field);
          if (it == object.end()) continue;
          values[modality] = it->is_null() ? std::string() : it->is_string() ? it->get<std::string>() : it->dump();
        }
        builder.add_plugins(record, values, line_no, had_invalid);
      }
      manifest.records.push_back(std::move(record));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// CSV / TSV (RFC 4180 quoting with either delimiter)

struct CsvRow {
  long line = 0;  // physical line where the row starts
  std::vector<std::string> fields;
  std::string error;  // non-empty for a malformed row
};

class CsvReader {
 public:
  CsvReader(const std::string& path, const std::string& data, char delimiter)
      : path_(path), data_(data), delimiter_(delimiter) {}

  /// Reads the next non-empty row; false at the end of the data. An unterminated quoted field
  /// throws DataError (it swallows the rest of the file, so it is a file-level error).
  bool next(CsvRow& row) {
    row.fields.clear();
    row.error.clear();
    // Skip empty lines.
    while (pos_ < data_.size()) {
      if (data_[pos_] == '\n') {
        ++pos_;
        ++line_;
      } else if (data_[pos_] == '\r' && pos_ + 1 < data_.size() && data_[pos_ + 1] == '\n') {
        pos_ += 2;
        ++line_;
      } else {
        break;
      }
    }
    if (pos_ >= data_.size()) return false;
    row.line = line_;
    std::string field;
    while (true) {
      field.clear();
      if (pos_ < data_.size() && data_[pos_] == '"') {
        if (!read_quoted(field, row)) return true;  // malformed row, already skipped
      } else {
        read_unquoted(field);
      }
      row.fields.push_back(field);
      if (pos_ >= data_.size()) return true;
      const char c = data_[pos_];
      if (c == delimiter_) {
        ++pos_;
        continue;
      }
      // Otherwise at a line end ("\n" or "\r\n").
      pos_ += (c == '\r') ? 2 : 1;
      ++line_;
      return true;
    }
  }

 private:
  bool at_line_end() const {
    const char c = data_[pos_];
    return c == '\n' || (c == '\r' && pos_ + 1 < data_.size() && data_[pos_ + 1] == '\n');
  }

  void read_unquoted(std::string& field) {
    const std::size_t start = pos_;
    while (pos_ < data_.size() && data_[pos_] != delimiter_ && !at_line_end()) ++pos_;
    field.assign(data_, start, pos_ - start);
  }

  /// Reads a quoted field starting at the opening quote. Returns false (with row.error set and
  /// the rest of the physical line skipped) when the closing quote is followed by junk.
  bool read_quoted(std::string& field, CsvRow& row) {
    const long start_line = line_;
    ++pos_;
    while (true) {
      if (pos_ >= data_.size()) {
        throw DataError(path_, start_line, "unterminated quoted field (no closing '\"')");
      }
      const char c = data_[pos_];
      if (c == '"') {
        if (pos_ + 1 < data_.size() && data_[pos_ + 1] == '"') {
          field += '"';
          pos_ += 2;
          continue;
        }
        ++pos_;
        break;
      }
      if (c == '\r' && pos_ + 1 < data_.size() && data_[pos_ + 1] == '\n') {
        field += '\n';
        pos_ += 2;
        ++line_;
      } else {
        if (c == '\n') ++line_;
        field += c;
        ++pos_;
      }
    }
    if (pos_ >= data_.size() || data_[pos_] == delimiter_ || at_line_end()) return true;
    row.error = std::string("unexpected character '") + data_[pos_] +
                "' after a closing quote (a quote inside a quoted field must be doubled)";
    while (pos_ < data_.size() && data_[pos_] != '\n') ++pos_;
    if (pos_ < data_.size()) {
      ++pos_;
      ++line_;
    }
    return false;
  }

  const std::string& path_;
  const std::string& data_;
  char delimiter_;
  std::size_t pos_ = 0;
  long line_ = 1;
};

void read_delimited(const std::string& path, const std::string& data, char delimiter,
                    const ManifestReadOptions& options, Manifest& manifest) {
  const bool skip = options.on_bad_record == "skip";
  RecordBuilder builder(path, options);
  CsvReader reader(path, data, delimiter);
  CsvRow row;
  if (!reader.next(row)) return;  // empty file: no header, no records
  if (!row.error.empty()) throw DataError(path, row.line, "bad header: " + row.error);
  std::vector<std::string> header;
  for (const auto& name : row.fields) header.push_back(trim_spaces(name));
  const long header_line = row.line;

  // Column index of each used field, -1 when absent (allowed only where the value may be
  // missing).
  auto column = [&](const std::string& name, bool may_be_missing) -> long {
    if (name.empty()) return -1;
    long found = -1;
    for (std::size_t i = 0; i < header.size(); ++i) {
      if (header[i] != name) continue;
      if (found >= 0) {
        throw DataError(path, header_line, "column '" + name + "' appears twice in the header");
      }
      found = static_cast<long>(i);
    }
    if (found < 0 && !may_be_missing) {
      std::string names;
      for (const auto& h : header) names += (names.empty() ? "" : ", ") + ("'" + h + "'");
      throw DataError(path, header_line,
                      "header lacks column '" + name + "' (found " + names + ")");
    }
    return found;
  };
  const ManifestFields& f = options.fields;
  const long text_col = column(f.text, options.allow_missing_text);
  const long image_col = column(f.image, options.allow_missing_image);
  const long label_col = column(f.label, !options.require_label);
  std::map<std::string, long> plugin_cols;
  for (const auto& [modality, field] : f.plugins) {
    plugin_cols[modality] = column(field, options.allow_missing_plugins.count(modality) > 0);
  }

  while (reader.next(row)) {
    guarded(manifest, skip, [&] {
      if (!row.error.empty()) builder.fail(row.line, row.error);
      if (row.fields.size() != header.size()) {
        builder.fail(row.line, "expected " + std::to_string(header.size()) + " fields, found " +
                                   std::to_string(row.fields.size()));
      }
      auto get = [&](long col) -> RawField {
        if (col < 0) return std::nullopt;
        return row.fields[static_cast<std::size_t>(col)];
      };
      RawField label = get(label_col);
      SoftLabel soft;
      if (label && trim_spaces(*label).rfind('{', 0) == 0) {
        // A soft label: the cell holds a JSON object, e.g. "{""refund"": 0.7, ""exchange"": 0.3}".
        nlohmann::json object;
        try {
          object = nlohmann::json::parse(*label);
        } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999
          builder.fail(row.line, "soft label in column '" + f.label +
                                     "' is not a valid JSON object: " + e.what());
        }
        if (!object.is_object()) {
          builder.fail(row.line, "soft label in column '" + f.label +
                                     "' must be a JSON object, found " + object.type_name());
        }
        soft = soft_label_from_json(object, f.label, builder, row.line, false);
        label = most_probable(soft);
      }
      Record record = builder.build(get(text_col), get(image_col), label, row.line);
      record.soft_label = std::move(soft);
      if (!plugin_cols.empty()) {
        std::map<std::string, RawField> values;
        for (const auto& [modality, col] : plugin_cols) values[modality] = get(col);
        builder.add_plugins(record, values, row.line);
      }
      manifest.records.push_back(std::move(record));
    });
  }
}

}  // namespace

std::size_t utf8_sequence_length(const std::string& s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  std::size_t len = 0;
  unsigned lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 == 0xE0) {
    len = 3;
    lo = 0xA0;
  } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
    len = 3;
  } else if (b0 == 0xED) {
    len = 3;
    hi = 0x9F;  // excludes UTF-16 surrogates
  } else if (b0 == 0xF0) {
    len = 4;
    lo = 0x90;
  } else if (b0 >= 0xF1 && b0 <= 0xF3) {
    len = 4;
  } else if (b0 == 0xF4) {
    len = 4;
    hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  const auto b1 = static_cast<unsigned char>(s[i + 1]);
  if (b1 < lo || b1 > hi) return 0;
  for (std::size_t k = 2; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < 0x80 || b > 0xBF) return 0;
  }
  return len;
}

std::size_t find_invalid_utf8(const std::string& text) {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = utf8_sequence_length(text, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string::npos;
}

ManifestFormat parse_manifest_format(const std::string& name) {
  if (name == "auto") return ManifestFormat::automatic;
  if (name == "jsonl") return ManifestFormat::jsonl;
  if (name == "csv") return ManifestFormat::csv;
  if (name == "tsv") return ManifestFormat::tsv;
  throw Error("unknown manifest format '" + name + "': expected auto, jsonl, csv or tsv");
}

std::string read_text_file(const std::string& path, const std::string& what) {
  std::string data = read_file(path, what);
  if (data.size() >= 3 && data.compare(0, 3, "\xEF\xBB\xBF") == 0) data.erase(0, 3);
  return data;
}

namespace {
void check_read_options(const ManifestReadOptions& options) {
  if (options.on_bad_record != "error" && options.on_bad_record != "skip") {
    throw Error("on_bad_record must be \"error\" or \"skip\", found \"" + options.on_bad_record +
                "\"");
  }
  if (options.require_label && options.fields.label.empty()) {
    throw Error("labels are required but the label field name is empty");
  }
}
}  // namespace

Manifest parse_jsonl_manifest(const std::string& data, const std::string& name, long line_offset,
                              const ManifestReadOptions& options) {
  check_read_options(options);
  Manifest manifest;
  manifest.path = name;
  read_jsonl(name, data, options, manifest, line_offset);
  return manifest;
}

Manifest read_manifest(const std::string& path, const ManifestReadOptions& options) {
  check_read_options(options);
  ManifestFormat format = options.format;
  if (format == ManifestFormat::automatic) format = format_from_extension(path);
  const std::string data = read_text_file(path, "manifest");

  Manifest manifest;
  manifest.path = path;
  switch (format) {
    case ManifestFormat::jsonl:
      read_jsonl(path, data, options, manifest);
      break;
    case ManifestFormat::csv:
      read_delimited(path, data, ',', options, manifest);
      break;
    case ManifestFormat::tsv:
      read_delimited(path, data, '\t', options, manifest);
      break;
    case ManifestFormat::automatic:
      break;  // resolved above
  }
  return manifest;
}

}  // namespace mmintent
