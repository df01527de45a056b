#pragma once
/// Training-time augmentation settings of the built-in modalities. Randomness derives from
/// (seed, epoch, sample), never from threads or batch order (see data/modality.h).

#include <cstdint>

namespace mmintent {

/// SpecAugment (Park et al. 2019) on log-mel features: time and frequency masks, each set to
/// the utterance's mean (0 after normalisation). Only while training, only with
/// `data.augment.enabled`.
struct SpecAugmentOptions {
  int64_t time_masks = 2;       ///< masks over time per utterance
  int64_t time_width = 20;      ///< a time mask's width is drawn from [0, time_width] frames ...
  double max_time_ratio = 0.1;  ///< ... and at most this share of the utterance's frames
  int64_t freq_masks = 2;       ///< masks over mel bands per utterance
  int64_t freq_width = 8;       ///< a band mask's width is drawn from [0, freq_width] bands
};

/// Noise on training texts (`data.augment.text`): word-level noise on the raw text
/// (data/text_noise.h's apply_text_noise: deletion, then swap, then typos), the text then
/// tokenised again (and cut to max_length), then token dropout on its ids. Per word / token
/// probabilities in [0, 1]; all 0 (the default): the texts' ids are the ones tokenised once when
/// the data set was built, and nothing is re-tokenised. Only while training, only with
/// `data.augment.enabled`; random from (seed, epoch, sample).
struct TextAugmentOptions {
  double typos = 0.0;          ///< a word gets one keyboard typo
  double deletion = 0.0;       ///< a word is dropped (one always stays)
  double swap = 0.0;           ///< a word changes places with the next one
  double token_dropout = 0.0;  ///< a token id is removed (one always stays)

  /// Whether any text noise is on.
  bool any() const { return typos > 0 || deletion > 0 || swap > 0 || token_dropout > 0; }
};

/// Random training-time augmentation (`data.augment`): the image fields are applied by
/// image_to_chw (data/image.h), `spec_augment` to audio features (data/audio_features.h),
/// `text` to token ids (data/modalities/text.cpp).
struct AugmentOptions {
  bool enabled = false;
  int64_t crop_padding = 0;  ///< Pad by N pixels (edge replicate), then crop back to HxW at a
                             ///< random offset in [0, 2N] on each axis.
  double hflip = 0.0;        ///< Probability of a horizontal flip.
  double brightness = 0.0;   ///< Adds U(-b, b) on the [0,1] scale, then clamps to [0,1].
  double contrast = 0.0;     ///< Scales around the image's mean intensity by U(1-c, 1+c),
                             ///< then clamps to [0,1].
  SpecAugmentOptions spec_augment;
  TextAugmentOptions text;
};

}  // namespace mmintent
