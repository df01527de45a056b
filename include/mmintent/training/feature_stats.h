#pragma once
/// Global feature statistics fitted on a training split before training: the per-band mean
/// and standard deviation of the audio features that `data.audio.normalize: global` normalises
/// with (kept in the model: AudioEncoderOptions::global_norm).

#include "mmintent/core/batch.h"
#include "mmintent/models/intent_classifier.h"

#include <cstdint>
#include <optional>
#include <string>

namespace mmintent {

struct FeatureStats {
  at::Tensor mean;  ///< [D] float, per feature (mel band)
  at::Tensor std;   ///< [D] float, population standard deviation
  int64_t samples = 0;  ///< samples carrying the modality
  int64_t frames = 0;   ///< real frames counted (padding left out)
};

/// One pass (epoch 0) over `source`: mean and standard deviation of each feature of the
/// sequence modality `modality` ([B,T,D] data with lengths) over every sample's real frames,
/// accumulated in double. Samples without the modality and padded frames are left out.
/// Throws std::invalid_argument when no batch carries the modality or no frame is real.
FeatureStats sequence_feature_stats(BatchSource& source, const std::string& modality = "audio");

/// When `model` fuses audio with global normalisation, fits its statistics on one pass of
/// `source` (sequence_feature_stats) and sets them (AudioEncoderImpl::set_feature_stats).
/// Returns the statistics, or nullopt (nothing read) when the model has no such encoder.
std::optional<FeatureStats> fit_feature_stats(IntentClassifier& model, BatchSource& source);

}  // namespace mmintent
