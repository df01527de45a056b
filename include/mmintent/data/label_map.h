#pragma once
/// The mapping between intent labels (strings) and class indices 0..size()-1.

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace mmintent {

/// An ordered set of distinct, non-empty labels; a label's index is its position.
class LabelMap {
 public:
  LabelMap() = default;

  /// Distinct labels of `labels` sorted in byte order. Throws Error for an empty label or one
  /// that is not valid UTF-8.
  static LabelMap from_labels(const std::vector<std::string>& labels);

  /// Reads a JSON array of strings (.json, any case) or a text file with one label per line
  /// (any other extension; blank lines ignored, a trailing '\r' dropped). The file's order is
  /// kept. Throws DataError(path, line, reason) for a missing/unreadable file, bad JSON, a
  /// non-string element, an empty label, invalid UTF-8 or a duplicate label.
  static LabelMap load(const std::string& path);

  /// Writes the labels as a JSON array of strings, through a temporary file renamed over
  /// `path`. Throws Error naming `path` when it cannot be written.
  void save(const std::string& path) const;

  /// Number of labels (= number of classes).
  int64_t size() const { return static_cast<int64_t>(names_.size()); }

  /// Index of `label`, or -1 when it is unknown.
  int64_t find(const std::string& label) const;

  /// Index of `label`. Throws DataError naming `where` (e.g. "data/val.jsonl:12": a trailing
  /// ":<digits>" becomes the error's line) and the label when it is unknown.
  int64_t index(const std::string& label, const std::string& where) const;

  /// Label at `index`; throws std::out_of_range outside [0, size()).
  const std::string& name(int64_t index) const;

  /// All labels in index order.
  const std::vector<std::string>& names() const { return names_; }

 private:
  explicit LabelMap(std::vector<std::string> names);

  std::vector<std::string> names_;
  std::unordered_map<std::string, int64_t> index_;
};

}  // namespace mmintent
