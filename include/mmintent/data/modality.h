#pragma once
/// How a data set reads one modality: a ModalityReader prepares the values of a manifest's
/// records once (tokenises texts, decodes images, parses a plug-in's values) and collates a
/// batch's samples into a ModalityInput. "text", "image" and "audio" are built in; an application adds
/// a modality with register_modality (run/plugins.h), which registers its reader here.

#include "mmintent/core/batch.h"
#include "mmintent/core/modality.h"
#include "mmintent/data/manifest.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mmintent {

struct AugmentOptions;
struct DatasetOptions;
class Tokenizer;

/// What a reader is given when a data set is built.
struct ReaderContext {
  std::string manifest;            ///< the manifest's path, for messages
  const DatasetOptions& options;   ///< the data set's options (image size, text length, threads)
  std::shared_ptr<const Tokenizer> tokenizer;  ///< null when the data set uses no text
  const ModalitySettings& settings;            ///< the modality's own settings (plug-ins)
};

class ModalityReader {
 public:
  virtual ~ModalityReader() = default;
  /// Prepares the value of every record, once per data set; `values[i]` is record i's value
  /// as written in the manifest ("" when the record lacks it). Returns one message per
  /// record, "" when the value is fine; a record with a message is an error or a skip
  /// (data.on_bad_sample), and is then dropped with retain().
  virtual std::vector<std::string> prepare(const std::vector<std::string>& values,
                                           const std::vector<long>& lines) = 0;
  /// Keeps the records whose keep[i] is non-zero, in order.
  virtual void retain(const std::vector<char>& keep) = 0;
  /// Whether sample i carries the modality.
  virtual bool present(int64_t i) const = 0;
  /// Collates the samples `indices` (CPU tensors; mask 1 where present). `augment`: the
  /// training augmentation, null when off; randomness must derive from `seed` and the sample's
  /// index (mix_seed(seed, k, index)), never from the batch's order or threads.
  virtual ModalityInput collate(const std::vector<int64_t>& indices, const AugmentOptions* augment,
                                uint64_t seed) const = 0;
};

using ReaderFactory = std::function<std::unique_ptr<ModalityReader>(const ReaderContext&)>;

/// Registers the reader of plug-in modality `name` (use run/plugins.h's register_modality,
/// which also registers its encoder and name). Throws Error when `name` has a reader already.
void register_modality_reader(const std::string& name, ReaderFactory factory);
/// A reader for modality `name`. Throws Error naming the modality when none is registered.
std::unique_ptr<ModalityReader> make_modality_reader(const std::string& name, const ReaderContext& context);

/// Record r's value for modality `name`: its text, its image path, or a plug-in's value ("").
const std::string& record_value(const Record& r, const std::string& name);

/// Keeps the elements of `v` whose keep[i] is non-zero, in order (for ModalityReader::retain).
template <class T>
void retain_where(std::vector<T>& v, const std::vector<char>& keep) {
  size_t w = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!keep[i]) continue;
    if (w != i) v[w] = std::move(v[i]);
    ++w;
  }
  v.resize(w);
}

}  // namespace mmintent
