#pragma once
/// Importers that turn public data sets, in their upstream formats, into the JSONL manifests
/// read_manifest() reads: OUT_DIR/{train,val,test}.jsonl, one {"text", "image", "label"}
/// object per line (a field a data set lacks is left out: CLINC150 and SNIPS have no "image",
/// Fashion-MNIST has no "text"; read them with allow_missing_image / allow_missing_text).
///
/// Every importer reads and checks all of its input before it writes anything. A malformed
/// input throws DataError(file, line, reason) naming the file, the 0-based byte offset and,
/// where there is one, the record. The three manifests are written to temporary files and
/// renamed into place only when all three are complete, so an existing OUT_DIR keeps its
/// previous manifests on a failure and gets the new ones on success (rerunning is safe).
/// Nothing here prints or logs: the summary says what was written and what was decided.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mmintent {

/// One count compared with the figure the data set's authors published.
struct CountCheck {
  std::string what;           ///< e.g. "train in-scope", "validate utterances"
  std::size_t found = 0;
  std::size_t published = 0;
};

/// The records written for one split.
struct SplitCounts {
  std::string split;                            ///< "train", "val" or "test"
  std::size_t records = 0;                      ///< lines in OUT_DIR/<split>.jsonl
  std::map<std::string, std::size_t> by_kind;   ///< records per kind (see ImportSummary::kind)
};

/// A SNIPS file whose bytes were not valid UTF-8 and were decoded by the chosen policy.
struct RedecodedFile {
  std::string file;                   ///< path of the upstream file
  std::size_t latin1_bytes = 0;       ///< invalid bytes read as Latin-1 (U+0080..U+00FF)
  std::size_t surrogate_pairs = 0;    ///< CESU-8 surrogate pairs (6 bytes) joined into one code point
  std::size_t first_offset = 0;       ///< 0-based byte offset of the first invalid byte
};

/// What an importer wrote and decided.
struct ImportSummary {
  std::string dataset;                     ///< "clinc150", "snips" or "fashion-mnist"
  std::string out_dir;
  std::vector<std::string> manifests;      ///< the three manifest paths, train/val/test
  std::string kind;                        ///< what SplitCounts::by_kind counts: "scope"
                                           ///< (CLINC150: "in_scope" / "oos"), "intent", "class"
  std::vector<SplitCounts> splits;         ///< train, val, test in that order
  std::size_t num_labels = 0;              ///< distinct labels over all splits
  std::vector<CountCheck> checks;          ///< counts compared with the published figures
  std::vector<RedecodedFile> redecoded;    ///< SNIPS files with invalid UTF-8 (decoded)
  std::vector<std::string> notes;          ///< other decisions taken, one sentence each

  /// The checks whose found count differs from the published one.
  std::vector<CountCheck> count_differences() const;
};

/// CLINC150 (Larson et al., 2019): SRC_DIR/data_<variant>.json.
struct Clinc150ImportOptions {
  std::string variant = "full";     ///< "full", "small", "imbalanced" or "oos_plus"
  /// true: oos_train/oos_val/oos_test are appended to train/val/test with label `oos_label`
  /// (needed by both the oos-train and the threshold methods); false: they are left out.
  bool include_oos = true;
  std::string oos_label = "oos";    ///< must differ from every in-scope intent
};

/// Imports CLINC150. Published counts (paper, checked against the files): in-scope
/// train/val/test 15000/3000/4500 (full, oos_plus), 7500/3000/4500 (small), 10525/3000/4500
/// (imbalanced), 150 intents; out-of-scope 100/100/1000 (oos_plus: 250/100/1000).
/// Throws DataError for a missing file, invalid JSON, a missing/duplicate/unknown key, a record
/// that is not a [text, intent] pair of non-empty strings, or an in-scope intent equal to
/// `oos_label`; Error for a bad option.
ImportSummary import_clinc150(const std::string& src_dir, const std::string& out_dir,
                              const Clinc150ImportOptions& options = {});

/// SNIPS 2017 (Coucke et al., 2018): SRC_DIR/train_<Intent>_full.json and
/// SRC_DIR/validate_<Intent>.json for each intent.
struct SnipsImportOptions {
  /// What to do with bytes that are not valid UTF-8. `decode`: read them (see
  /// join_surrogate_pairs) and report each file in ImportSummary::redecoded; `error`: throw
  /// DataError naming the file and the byte offset of the first one.
  enum class InvalidUtf8 { decode, error };
  InvalidUtf8 invalid_utf8 = InvalidUtf8::decode;
  /// With `decode`: a UTF-16 surrogate pair written as two 3-byte sequences (CESU-8, e.g.
  /// ED A0 BC ED BD 95 for U+1F355) is joined into the one code point it stands for; every
  /// other invalid byte b is read as Latin-1, i.e. becomes U+00b. false: Latin-1 for all.
  bool join_surrogate_pairs = true;
  /// Utterances per intent held out of the train files as the validation split, chosen at
  /// random (deterministic for `seed`); the validate files become the test split.
  std::size_t val_per_intent = 100;
  std::uint64_t seed = 42;
};

/// Imports SNIPS. An utterance is the concatenation of its data[*].text pieces with outer
/// whitespace stripped (inner text, line breaks included, kept as is); its label is the intent
/// name. Records are written by intent (sorted by name), in file order within an intent.
/// Published counts: 13784 train-file utterances (Goo et al. 2018's 13084 train + 700 dev),
/// 700 validate utterances (100 per intent), 7 intents.
/// Throws DataError for missing files, invalid UTF-8 (with `error`), invalid JSON, a top-level
/// key other than the file's intent, a record without a "data" array of {"text": string}
/// pieces, or an empty utterance; Error when val_per_intent leaves an intent no training data.
ImportSummary import_snips(const std::string& src_dir, const std::string& out_dir,
                           const SnipsImportOptions& options = {});

/// How a spoken data set is synthesised (import_spoken_snips, import_spoken): each utterance's
/// text spoken by espeak-ng with a voice, rate and pitch drawn at random, at a random level,
/// with white or pink noise at a random signal-to-noise ratio or none.
struct SpeechOptions {
  /// espeak-ng's English voices (MBROLA voices left out: they are separate downloads).
  std::vector<std::string> accents{"en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan",
                                   "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029"};
  /// Shares of espeak-ng's voice variants that speak only val, and only test; the rest speak
  /// train. No variant speaks in two splits (accents are shared).
  double val_voices = 0.15;
  double test_voices = 0.25;
  /// Noise levels: each utterance gets one at random, white or pink noise at that
  /// signal-to-noise ratio (dB), or none when `clean`.
  std::vector<double> snr_db{20, 10, 5};
  bool clean = true;
  int rate_min = 140, rate_max = 200;  ///< words per minute, uniform
  int pitch_min = 25, pitch_max = 75;  ///< espeak-ng's 0-100 scale, uniform
  int64_t sample_rate = 16000;         ///< of the WAV files written
  std::size_t limit = 0;               ///< at most this many utterances per split; 0: all
  std::uint64_t seed = 42;             ///< voices, renditions and noise
  int64_t threads = 0;                 ///< 0: one per core
};

/// Spoken SNIPS: SNIPS, read and split as import_snips does, spoken by espeak-ng.
struct SpokenSnipsImportOptions {
  SnipsImportOptions text;
  SpeechOptions speech;
};

/// Imports SNIPS as speech: OUT_DIR/audio/{train,val,test}/NNNNNN.wav (16-bit mono) and
/// manifests whose records hold `text` (the transcript), `label`, `audio` (the path relative to
/// OUT_DIR) and how it was spoken (`voice`, `rate`, `pitch`, `noise`, `snr`, `seconds`), plus
/// OUT_DIR/README.md saying what the synthetic speech is and is not. Each split has its own
/// voice variants. The split and each utterance's voice, rate, pitch, level and noise are
/// deterministic for a seed; the samples vary slightly from run to run (espeak-ng carries state
/// from one utterance to the next: a few milliseconds of timing). Throws as import_snips
/// for the SNIPS files, Error for bad options or when espeak-ng cannot start or lacks an
/// accent, DataError for a file it cannot write.
ImportSummary import_spoken_snips(const std::string& src_dir, const std::string& out_dir,
                                  const SpokenSnipsImportOptions& options = {});

/// Speaks the `text` of any manifests SRC_DIR/{train,val,test}.jsonl (e.g. the demo's) as
/// import_spoken_snips does; every other field is kept (an `image` path rewritten to stay valid
/// from OUT_DIR). Throws DataError naming the file and line for a record without a text or a
/// label, as import_spoken_snips otherwise.
ImportSummary import_spoken(const std::string& src_dir, const std::string& out_dir,
                            const SpeechOptions& options = {});

/// Fashion-MNIST (Xiao et al., 2017): the four gzip-compressed IDX files
/// SRC_DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.
struct FashionMnistImportOptions {
  /// Training images held out as the validation split: a uniform random subset, deterministic
  /// for `seed`. Must leave at least one training image.
  std::size_t val_size = 5000;
  std::uint64_t seed = 42;
};

/// The Fashion-MNIST class names by class id 0..9, as written to the manifests.
const std::vector<std::string>& fashion_mnist_class_names();

/// Imports Fashion-MNIST: writes 28x28 8-bit grey PNGs OUT_DIR/images/{train,val,test}/NNNNN.png
/// (NNNNN = 0-based position in the split, at least 5 digits) and manifests whose "image" is
/// the path relative to OUT_DIR; train/val keep the upstream order. Old manifests are removed
/// before the first PNG is written (so none can point at a half-rewritten image folder), and
/// PNGs with all-digit names left by an earlier run are removed. Published counts: 60000 train
/// (train + val here), 10000 test, 10 classes.
/// Throws DataError for a missing or unreadable file, a bad IDX magic number, a size that is
/// not 28x28, truncated data, mismatched image/label counts, a label above 9, or an output file
/// (PNG, manifest) that cannot be written; Error when val_size leaves no training image.
ImportSummary import_fashion_mnist(const std::string& src_dir, const std::string& out_dir,
                                   const FashionMnistImportOptions& options = {});

}  // namespace mmintent
