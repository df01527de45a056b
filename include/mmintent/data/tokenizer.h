#pragma once
/// Sentencepiece tokenizer. Sentencepiece itself lives in libmmintent_spm.so, loaded once per
/// process with dlmopen into its own namespace (its bundled protobuf clashes with LibTorch's);
/// this header and libmmintent.so never depend on sentencepiece.
///
/// The shim is looked up, in order, at: $MMINTENT_SPM_SHIM (full path); the directory of the
/// shared object holding this code + /libmmintent_spm.so; the build and install library dirs.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mmintent {

/// How to train a sentencepiece model.
/// Example: `TokenizerTrainOptions o; o.vocab_size = 500; o.model_type = "bpe";`
struct TokenizerTrainOptions {
  /// Target number of sentencepiece pieces (a soft limit: tiny corpora give fewer).
  int64_t vocab_size = 1000;
  /// One of unigram | bpe | word | char.
  std::string model_type = "unigram";
  /// Fraction of characters covered by the model, in (0, 1]; the rest map to <unk>.
  double character_coverage = 1.0;
};

/// A loaded sentencepiece model. Copies share one model; encode/decode are thread-safe.
class Tokenizer {
 public:
  /// Loads a sentencepiece model; throws DataError(path, 0, ...) if missing or corrupt, and
  /// mmintent::Error if the shim library cannot be found.
  static Tokenizer load(const std::string& model_path);

  /// Trains on `texts` (one sentence each; empty ones skipped, line breaks become spaces),
  /// writes <model_prefix>.model and <model_prefix>.vocab (creating the parent folder) and
  /// returns the model loaded. Deterministic for equal inputs. Throws std::invalid_argument for
  /// bad options and mmintent::Error when there is nothing to train on or training fails.
  static Tokenizer train(const std::vector<std::string>& texts, const std::string& model_prefix,
                         const TokenizerTrainOptions& options);

  /// Token ids of UTF-8 `text`, shape [T], each in [1, vocab_size()): sentencepiece ids shifted
  /// by +1 so that 0 is free for padding. Empty text gives an empty vector.
  std::vector<int64_t> encode(const std::string& text) const;

  /// Inverse of encode; ids <= 0 (padding) are skipped. Throws std::invalid_argument for an id
  /// >= vocab_size().
  std::string decode(const std::vector<int64_t>& ids) const;

  /// Number of ids including padding 0 (= sentencepiece piece count + 1).
  int64_t vocab_size() const;

  /// The path the model was loaded from.
  const std::string& model_path() const;

 private:
  struct Model;
  explicit Tokenizer(std::shared_ptr<const Model> model);
  std::shared_ptr<const Model> model_;
};

}  // namespace mmintent
