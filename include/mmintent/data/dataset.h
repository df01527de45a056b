#pragma once
/// A multimodal data set: the records of a manifest with their labels mapped to indices and
/// each modality's values prepared once by its reader (data/modality.h): texts tokenised,
/// images decoded and cached (optionally), a plug-in's values parsed.

#include "mmintent/core/batch.h"
#include "mmintent/core/seed.h"  // mix_seed: per-sample augmentation seeds
#include "mmintent/data/audio.h"
#include "mmintent/data/image.h"
#include "mmintent/data/label_map.h"
#include "mmintent/data/manifest.h"
#include "mmintent/data/modality.h"
#include "mmintent/data/tokenizer.h"

#include <memory>
#include <string>
#include <vector>

namespace mmintent {

struct DatasetOptions {
  /// The modalities read, by name (core/modality.h); the others are ignored.
  std::vector<std::string> modalities{"text", "image"};
  /// Plug-in modalities' settings (`model.plugins.<name>`), by modality name.
  std::map<std::string, ModalitySettings> plugins;
  ImageOptions image;
  AudioOptions audio;
  int64_t max_length = 64;      ///< tokens kept per text
  bool cache_images = true;     ///< decode all images up front
  /// Without the cache: still decode every image once up front (keeping none), so that a bad
  /// image is an error or a skip (on_bad_sample) before training, not a failure mid-epoch.
  bool check_images = false;
  std::string unknown_labels = "error";  ///< error | skip
  std::string on_bad_sample = "error";   ///< error | skip (bad images: cached or checked)
  int64_t threads = 1;          ///< threads used to decode the cache (or check the images)
  /// Samples with this label get class index labels->size() (one past the label map), for
  /// out-of-scope samples that are not a trained class. Empty: none.
  std::string extra_label;

  bool uses(const std::string& modality) const;
};

class MultimodalDataset {
 public:
  /// `labels` may be null for unlabeled data; `tokenizer` may be null when text is unused.
  /// Throws DataError naming the manifest file and line for unknown labels and bad samples
  /// (unless the options say skip; skipped samples are listed in skipped()).
  MultimodalDataset(Manifest manifest, const LabelMap* labels,
                    std::shared_ptr<const Tokenizer> tokenizer, DatasetOptions options);

  int64_t size() const { return static_cast<int64_t>(records_.size()); }
  const Record& record(int64_t i) const { return records_.at(i); }
  const std::vector<Record>& records() const { return records_; }
  /// Sample i's token ids (the data set must use text).
  const std::vector<int64_t>& token_ids(int64_t i) const;
  /// Class index of sample i: its label, the most probable intent of a soft label, or -1 for
  /// unlabeled data and for a sample that carries only a rejected intent.
  int64_t label(int64_t i) const { return labels_.empty() ? -1 : labels_.at(i); }
  bool has_labels() const { return !labels_.empty(); }
  /// Sample i's soft label as (class index, probability) pairs; empty for a hard label.
  const std::vector<std::pair<int64_t, float>>& soft_label(int64_t i) const { return soft_.at(i); }
  /// The class a person rejected for sample i (Record::rejected), or -1.
  int64_t rejected(int64_t i) const { return rejected_.empty() ? -1 : rejected_.at(i); }
  /// The intent shown for logged sample i (Record::shown), or -1; its propensity, or 0.
  int64_t shown(int64_t i) const { return shown_.empty() ? -1 : shown_.at(i); }
  float propensity(int64_t i) const { return propensity_.empty() ? 0.0f : propensity_.at(i); }
  /// Whether sample i carries `modality` (false when the data set does not use it).
  bool has(const std::string& modality, int64_t i) const;
  bool has_text(int64_t i) const { return has("text", i); }
  bool has_image(int64_t i) const { return has("image", i); }
  /// The modalities read, in canonical order (core/modality.h).
  std::vector<std::string> modalities() const;
  const DatasetOptions& options() const { return options_; }
  const std::string& path() const { return path_; }
  /// "file:line: reason" for every sample left out.
  const std::vector<std::string>& skipped() const { return skipped_; }
  /// Counts of samples per label index.
  std::vector<int64_t> label_counts(int64_t num_classes) const;

  /// Collates the samples `indices` into a batch (CPU tensors). Augmentation draws from
  /// `seed` and each sample's index, so it does not depend on threads or batch order. The
  /// batch has soft_targets [B,K] when one of its samples has a soft label, and rejected [B]
  /// when one has a rejected intent, shown and propensity [B] when one is logged (see Batch).
  Batch collate(const std::vector<int64_t>& indices, const AugmentOptions* augment,
                uint64_t seed) const;

 private:
  std::string path_;
  std::vector<Record> records_;
  std::vector<int64_t> labels_;
  std::vector<std::vector<std::pair<int64_t, float>>> soft_;  ///< per sample when labelled
  std::vector<int64_t> rejected_;  ///< per sample when labelled; -1 none
  std::vector<int64_t> shown_;     ///< per sample when labelled; -1 none
  std::vector<float> propensity_;  ///< per sample when labelled; 0 where shown_ is -1
  int64_t num_classes_ = 0;        ///< the label map's size (soft target width)
  /// One reader per modality used, in canonical order.
  std::vector<std::pair<std::string, std::unique_ptr<ModalityReader>>> readers_;
  std::vector<std::string> skipped_;
  DatasetOptions options_;
};


}  // namespace mmintent
