#pragma once
/// Adding a modality from outside the library. A modality is a name, a reader (how a data set
/// prepares and collates its values, data/modality.h) and an encoder (how the model turns them
/// into features, models/modality_encoder.h). Once registered, a config may list it in
/// `model.modalities`, give it settings under `model.plugins.<name>`, and every command that
/// reads manifests (train, eval, calibrate, predict --manifest) reads its field.
/// examples/custom_modality shows one end to end.

#include "mmintent/core/modality.h"
#include "mmintent/data/modality.h"
#include "mmintent/models/modality_encoder.h"

#include <string>

namespace mmintent {

struct ModalityPlugin {
  std::string name;      ///< [a-z][a-z0-9_]*, not "text" or "image"
  ReaderFactory reader;  ///< required
  EncoderFactory encoder;  ///< required
  /// Checks the settings when a config is read (throw SettingError naming the key). Null: the
  /// modality takes no keys beyond `field` and `allow_missing`.
  SettingsCheck check;
};

/// Registers `plugin` for the rest of the process (before the config that uses it is read).
/// Throws Error for a bad or taken name or a missing factory; nothing is registered then.
void register_modality(ModalityPlugin plugin);

}  // namespace mmintent
