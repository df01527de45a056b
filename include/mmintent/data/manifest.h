#pragma once
/// Reading data manifests: one record (text, image path, label) per JSONL line or CSV/TSV row.
/// Nothing here depends on LibTorch; the dataset turns records into tensors.

#include <cstddef>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace mmintent {

struct DecodedImage;  // data/image.h
struct DecodedAudio;  // data/audio.h

/// How a manifest is laid out. `automatic` picks by extension: .jsonl/.json, .csv, .tsv.
enum class ManifestFormat { automatic, jsonl, csv, tsv };

/// Parses "auto", "jsonl", "csv" or "tsv"; throws Error naming the accepted values otherwise.
ManifestFormat parse_manifest_format(const std::string& name);

/// Field (JSON key or CSV/TSV column) names. An empty name means the field is not read: the
/// record's value is then "" and no requirement applies to it.
struct ManifestFields {
  std::string text = "text";
  std::string image = "image";
  std::string label = "label";
  /// Plug-in modalities (core/modality.h): modality name -> its field. Their values land in
  /// Record::inputs.
  std::map<std::string, std::string> plugins;
};

/// One sample as written in the manifest.
struct Record {
  std::string text;   ///< UTF-8 text; "" when absent, null, empty or whitespace-only.
  std::string image;  ///< Image path; relative paths are resolved against the manifest's folder;
                      ///< "" when the record has no image.
  std::string label;  ///< Label text (JSON integers in decimal); "" when not read or absent.
                      ///< With a soft label: its most probable intent.
  long line = 0;      ///< 1-based line in the manifest (CSV/TSV: the line where the row starts).
  /// Soft label: a probability distribution over intents, (intent, probability) pairs in the
  /// intents' byte order, non-negative, normalised to sum to 1; empty for a hard label. Written
  /// as a JSON object in the label field, e.g. {"refund": 0.7, "exchange": 0.3} (in CSV/TSV a
  /// label cell starting with '{' is read as such an object). `label` holds the most probable
  /// intent (on ties the first in byte order).
  std::vector<std::pair<std::string, double>> soft_label;
  /// An intent a person rejected for this input (feedback, see data/feedback.h); "" for none.
  /// A record with a rejected intent may have no label.
  std::string rejected;
  /// A logged bandit sample (feedback with a propensity, data/feedback.h): the intent the
  /// product showed and the probability its policy showed it with, in (0, 1]; "" and 0 for
  /// none. Never read from a manifest.
  std::string shown;
  double propensity = 0;
  /// Plug-in modalities' values by modality name, as written: a JSON string's text, any other
  /// JSON value (a list of numbers, an object) as compact JSON, a CSV/TSV cell's text. Absent
  /// when the record lacks the modality.
  std::map<std::string, std::string> inputs;
  /// An image already decoded in memory (e.g. a served request's upload, data/image.h's
  /// decode_image), at the model's size and channels; when set, it is the record's image and
  /// `image` only names it in messages. Never read from a manifest.
  std::shared_ptr<const DecodedImage> image_pixels;
  /// Audio already decoded in memory (e.g. a served request's upload, data/audio.h's
  /// decode_audio_bytes) at the run's sample rate; when set, it is the record's audio. Never
  /// read from a manifest.
  std::shared_ptr<const DecodedAudio> audio_samples;
};

/// What to read and how strict to be.
struct ManifestReadOptions {
  ManifestFormat format = ManifestFormat::automatic;
  ManifestFields fields;
  bool require_label = true;         ///< A record without a label is an error.
  bool allow_missing_text = false;   ///< Absent/null/empty text allowed (else an error).
  bool allow_missing_image = false;  ///< Absent/null/empty image path allowed (else an error).
  /// Plug-in modalities (ManifestFields::plugins) a record may lack (else an error).
  std::set<std::string> allow_missing_plugins;
  /// Plug-in modalities (and "audio") whose values are file paths: relative ones are resolved
  /// against the manifest's folder, as image paths are.
  std::set<std::string> path_inputs;
  /// "error": the first bad record throws DataError. "skip": each bad record is recorded in
  /// Manifest::skipped instead (nothing is logged here). File-level problems always throw.
  std::string on_bad_record = "error";
};

/// The records of one manifest file.
struct Manifest {
  std::string path;
  std::vector<Record> records;
  std::vector<std::string> skipped;  ///< "file:line: reason" for each skipped record.
};

/// The whole file at `path` (a UTF-8 byte-order mark dropped). Throws DataError(path, 0, ...)
/// naming `what` ("manifest", "feedback log") when it is missing, a directory or unreadable.
std::string read_text_file(const std::string& path, const std::string& what);

/// Reads the manifest at `path`. Throws DataError(path, line, reason) for a missing file, an
/// unknown extension with `automatic`, a CSV/TSV header lacking a used column, and (unless
/// `on_bad_record` is "skip") for any bad record. Throws Error for contradictory options.
/// Zero records is not an error here.
Manifest read_manifest(const std::string& path, const ManifestReadOptions& options);

/// Reads JSONL records from `data` as if they were lines line_offset+1... of a file `name`
/// (for a stream read in pieces, e.g. standard input): messages say name:line, relative image
/// paths resolve against name's folder (none: the working directory). Throws as read_manifest.
Manifest parse_jsonl_manifest(const std::string& data, const std::string& name, long line_offset,
                              const ManifestReadOptions& options);

/// Byte offset of the first byte that does not start a valid UTF-8 sequence (overlong forms,
/// surrogates and code points above U+10FFFF are invalid), or std::string::npos when `text`
/// is valid UTF-8.
std::size_t find_invalid_utf8(const std::string& text);

/// Length of the valid UTF-8 sequence starting at text[i] (1-4), or 0 when none starts there
/// (overlong forms, surrogates and code points above U+10FFFF are invalid).
std::size_t utf8_sequence_length(const std::string& text, std::size_t i);

}  // namespace mmintent
