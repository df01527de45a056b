#include "mmintent/models/modality_encoder.h"

#include "mmintent/error.h"
#include "mmintent/models/image_encoder.h"
#include "mmintent/models/text_encoder.h"

#include <map>
#include <mutex>

namespace mmintent {
namespace {

struct Encoders {
  std::mutex mutex;
  std::map<std::string, EncoderFactory> factories;
};

Encoders& encoders() {
  static Encoders e;
  return e;
}

}  // namespace

void register_modality_encoder(const std::string& name, EncoderFactory factory) {
  if (is_builtin_modality(name)) throw Error("register_modality: '" + name + "' is built in");
  auto& e = encoders();
  std::lock_guard<std::mutex> lock(e.mutex);
  if (!e.factories.emplace(name, std::move(factory)).second) {
    throw Error("register_modality: modality '" + name + "' has an encoder already");
  }
}

std::shared_ptr<ModalityEncoderImpl> make_modality_encoder(const std::string& name,
                                                           const EncoderContext& context) {
  if (name == "text") return TextEncoder(context.text).ptr();
  if (name == "image") return ImageEncoder(context.image).ptr();
  EncoderFactory factory;
  {
    auto& e = encoders();
    std::lock_guard<std::mutex> lock(e.mutex);
    const auto it = e.factories.find(name);
    if (it != e.factories.end()) factory = it->second;
  }
  if (!factory) {
    throw Error("no encoder is registered for modality '" + name +
                "' (register it with register_modality, run/plugins.h)");
  }
  auto encoder = factory(context);
  if (!encoder) throw Error("the encoder factory of modality '" + name + "' returned null");
  TORCH_CHECK(encoder->output_dim() > 0, "the encoder of modality '", name,
              "' has output_dim ", encoder->output_dim(), ", expected > 0");
  return encoder;
}

}  // namespace mmintent
