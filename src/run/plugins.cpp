#include "mmintent/run/plugins.h"

#include "mmintent/error.h"

#include <mutex>

namespace mmintent {

void register_modality(ModalityPlugin plugin) {
  static std::mutex mutex;  // one registration at a time: the three registries stay in step
  std::lock_guard<std::mutex> lock(mutex);
  if (!plugin.reader) throw Error("register_modality: modality '" + plugin.name + "' has no reader");
  if (!plugin.encoder) throw Error("register_modality: modality '" + plugin.name + "' has no encoder");
  const auto known = modality_names();
  for (const auto& n : known) {
    if (n == plugin.name) {
      throw Error("register_modality: a modality named '" + plugin.name + "' is already registered");
    }
  }
  add_modality_name(plugin.name, std::move(plugin.check));  // validates the name
  register_modality_reader(plugin.name, std::move(plugin.reader));
  register_modality_encoder(plugin.name, std::move(plugin.encoder));
}

}  // namespace mmintent
