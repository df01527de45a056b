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

/// Random training-time augmentation (`data.augment`): the image fields are applied by
/// image_to_chw (data/image.h), `spec_augment` to audio features (data/audio_features.h).
struct AugmentOptions {
  bool enabled = false;
  int64_t crop_padding = 0;  ///< Pad by N pixels (edge replicate), then crop back to HxW at a
                             ///< random offset in [0, 2N] on each axis.
  double hflip = 0.0;        ///< Probability of a horizontal flip.
  double brightness = 0.0;   ///< Adds U(-b, b) on the [0,1] scale, then clamps to [0,1].
  double contrast = 0.0;     ///< Scales around the image's mean intensity by U(1-c, 1+c),
                             ///< then clamps to [0,1].
  SpecAugmentOptions spec_augment;
};

}  // namespace mmintent
