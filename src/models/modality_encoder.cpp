#include "mmintent/models/modality_encoder.h"

#include "mmintent/core/registry.h"
#include "mmintent/error.h"
#include "mmintent/models/audio_encoder.h"
#include "mmintent/models/image_encoder.h"
#include "mmintent/models/text_encoder.h"

namespace mmintent {
namespace {

detail::FactoryRegistry<EncoderFactory>& encoders() {
  static detail::FactoryRegistry<EncoderFactory> registry("an encoder");
  return registry;
}

}  // namespace

void register_modality_encoder(const std::string& name, EncoderFactory factory) {
  encoders().add(name, std::move(factory));
}

std::shared_ptr<ModalityEncoderImpl> make_modality_encoder(const std::string& name,
                                                           const EncoderContext& context) {
  if (name == "text") return TextEncoder(context.text).ptr();
  if (name == "image") return ImageEncoder(context.image).ptr();
  if (name == "audio") return AudioEncoder(context.audio).ptr();
  const EncoderFactory factory = encoders().get(name);
  auto encoder = factory(context);
  if (!encoder) throw Error("the encoder factory of modality '" + name + "' returned null");
  TORCH_CHECK(encoder->output_dim() > 0, "the encoder of modality '", name,
              "' has output_dim ", encoder->output_dim(), ", expected > 0");
  return encoder;
}

}  // namespace mmintent
