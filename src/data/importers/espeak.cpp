#include "data/importers/espeak.h"

#include "mmintent/error.h"

#include <espeak-ng/speak_lib.h>

#include <algorithm>
#include <mutex>

namespace mmintent::detail {
namespace {

std::mutex& synth_mutex() {
  static std::mutex m;
  return m;
}

int collect(short* wav, int n, espeak_EVENT* events) {
  if (wav && n > 0 && events && events->user_data) {
    auto* out = static_cast<std::vector<short>*>(events->user_data);
    out->insert(out->end(), wav, wav + n);
  }
  return 0;  // go on
}

}  // namespace

Espeak& Espeak::instance() {
  static Espeak e;
  return e;
}

Espeak::Espeak() {
  std::lock_guard<std::mutex> lock(synth_mutex());
  const int rate = espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, nullptr, espeakINITIALIZE_DONT_EXIT);
  if (rate <= 0) {
    throw Error("espeak-ng could not start (its voice data was not found; install Debian's espeak-ng-data)");
  }
  sample_rate_ = rate;
  espeak_SetSynthCallback(&collect);
  espeak_VOICE spec{};
  spec.languages = "variant";
  for (const espeak_VOICE** v = espeak_ListVoices(&spec); v && *v; ++v) {
    const std::string id = (*v)->identifier ? (*v)->identifier : "";
    const auto slash = id.rfind('/');
    if (slash != std::string::npos && slash + 1 < id.size()) variants_.push_back(id.substr(slash + 1));
  }
  std::sort(variants_.begin(), variants_.end());
  variants_.erase(std::unique(variants_.begin(), variants_.end()), variants_.end());
}

std::vector<float> Espeak::speak(const std::string& text, const std::string& voice, int rate, int pitch) {
  std::lock_guard<std::mutex> lock(synth_mutex());
  // espeak-ng selects its British English voice (file gmw/en, language en-gb) by the name "en";
  // "en-gb" is only its language code.
  std::string name = voice;
  if (name == "en-gb" || name.rfind("en-gb+", 0) == 0) name.replace(0, 5, "en");
  if (espeak_SetVoiceByName(name.c_str()) != EE_OK) {
    throw Error("espeak-ng has no voice '" + voice + "' (see espeak-ng --voices and --voices=variant)");
  }
  espeak_SetParameter(espeakRATE, std::clamp(rate, espeakRATE_MINIMUM, espeakRATE_MAXIMUM), 0);
  espeak_SetParameter(espeakPITCH, std::clamp(pitch, 0, 100), 0);
  std::vector<short> pcm;
  const espeak_ERROR err = espeak_Synth(text.c_str(), text.size() + 1, 0, POS_CHARACTER, 0,
                                        espeakCHARS_UTF8, nullptr, &pcm);
  if (err != EE_OK) throw Error("espeak-ng could not speak with voice '" + voice + "' (error " + std::to_string(err) + ")");
  if (espeak_Synchronize() != EE_OK) throw Error("espeak-ng did not finish speaking with voice '" + voice + "'");
  std::vector<float> out(pcm.size());
  for (size_t i = 0; i < pcm.size(); ++i) out[i] = float(pcm[i]) / 32768.f;
  return out;
}

}  // namespace mmintent::detail
