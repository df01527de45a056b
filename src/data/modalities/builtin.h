#pragma once
/// The built-in modality readers, "text", "image" and "audio" (data/modality.h). Internal.

#include "mmintent/data/audio.h"
#include "mmintent/data/augment.h"
#include "mmintent/data/audio_features.h"
#include "mmintent/data/image.h"
#include "mmintent/data/modality.h"

#include <memory>
#include <string>
#include <vector>

namespace mmintent::detail {

/// Tokenises each text once (cut to DatasetOptions::max_length); collates token ids [B,T]
/// (0 = padding, T the batch's longest, at least 1), lengths and the mask. With text
/// augmentation (AugmentOptions::text) a sample's ids are made again from its noisy text.
class TextReader : public ModalityReader {
 public:
  explicit TextReader(const ReaderContext& context);
  std::vector<std::string> prepare(const std::vector<std::string>& values,
                                   const std::vector<long>& lines) override;
  void retain(const std::vector<char>& keep) override {
    retain_where(ids_, keep);
    retain_where(texts_, keep);
  }
  bool present(int64_t i) const override { return !ids_.at(i).empty(); }
  ModalityInput collate(const std::vector<int64_t>& indices, const AugmentOptions* augment,
                        uint64_t seed) const override;
  const std::vector<int64_t>& token_ids(int64_t i) const { return ids_.at(i); }
  /// Sample i's ids under text augmentation `noise`, random from `seed` alone.
  std::vector<int64_t> augmented_ids(int64_t i, const TextAugmentOptions& noise, uint64_t seed) const;

 private:
  std::shared_ptr<const Tokenizer> tokenizer_;
  int64_t max_length_;
  std::vector<std::vector<int64_t>> ids_;
  std::vector<std::string> texts_;  ///< the raw texts, for text augmentation
};

/// Decodes every image once up front into a cache (DatasetOptions::cache_images), or only
/// checks it (check_images), or neither (decoded per batch); collates normalised pixels
/// [B,C,H,W] (augmented when training) and the mask.
class ImageReader : public ModalityReader {
 public:
  explicit ImageReader(const ReaderContext& context);
  std::vector<std::string> prepare(const std::vector<std::string>& values,
                                   const std::vector<long>& lines) override;
  void retain(const std::vector<char>& keep) override;
  bool present(int64_t i) const override {
    return !paths_.at(i).empty() || (!given_.empty() && given_.at(i));
  }
  ModalityInput collate(const std::vector<int64_t>& indices, const AugmentOptions* augment,
                        uint64_t seed) const override;
  /// Images already decoded in memory (Record::image_pixels), one per record (null: read the
  /// path); set before prepare.
  void set_decoded(std::vector<std::shared_ptr<const DecodedImage>> images) {
    given_ = std::move(images);
  }
  /// Writes sample i's normalised image (C*H*W floats) into `out`.
  void write_image(int64_t i, const AugmentOptions* augment, uint64_t seed, float* out) const;

 private:
  std::string manifest_;
  ImageOptions image_;
  bool cache_, check_;
  int64_t threads_;
  std::vector<std::string> paths_;
  std::vector<long> lines_;
  std::vector<DecodedImage> images_;  ///< the cache, empty when not caching
  std::vector<std::shared_ptr<const DecodedImage>> given_;  ///< empty when none was given
};

/// Decodes every clip once up front (mono, resampled, cut: data/audio.h) and keeps it as 16-bit
/// samples (AudioOptions::cache), or only checks it (decoded again per batch); collates log-mel
/// features [B,T,n_mels] (T the batch's longest, at least 1; zero past each length),
/// normalised per utterance, SpecAugment-ed when training, with lengths in frames and the mask.
class AudioReader : public ModalityReader {
 public:
  explicit AudioReader(const ReaderContext& context);
  std::vector<std::string> prepare(const std::vector<std::string>& values,
                                   const std::vector<long>& lines) override;
  void retain(const std::vector<char>& keep) override;
  bool present(int64_t i) const override {
    return !paths_.at(i).empty() || (!given_.empty() && given_.at(i));
  }
  ModalityInput collate(const std::vector<int64_t>& indices, const AugmentOptions* augment,
                        uint64_t seed) const override;
  /// Clips already decoded in memory (Record::audio_samples), one per record (null: read the
  /// path); set before prepare.
  void set_decoded(std::vector<std::shared_ptr<const DecodedAudio>> clips) { given_ = std::move(clips); }
  /// Sample i's features [frames x n_mels], frame-major, normalised and (with `augment`)
  /// SpecAugment-ed.
  std::vector<float> features(int64_t i, const AugmentOptions* augment, uint64_t seed) const;

 private:
  std::string manifest_;
  AudioOptions audio_;
  int64_t threads_;
  std::shared_ptr<const LogMelExtractor> extractor_;
  std::vector<std::string> paths_;
  std::vector<long> lines_;
  std::vector<std::vector<int16_t>> clips_;  ///< the cache, empty when not caching
  std::vector<std::shared_ptr<const DecodedAudio>> given_;  ///< empty when none was given
};

}  // namespace mmintent::detail
