#pragma once
/// What the classifier asks of a modality's encoder, and the registry of plug-in encoders.
/// "text" (TextEncoder), "image" (ImageEncoder) and "audio" (AudioEncoder) are built in; an application adds a modality
/// with register_modality (run/plugins.h), which registers its encoder here.

#include "mmintent/core/batch.h"
#include "mmintent/core/modality.h"

#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <string>

namespace mmintent {

struct TextEncoderOptions;
struct ImageEncoderOptions;
struct AudioEncoderOptions;

/// An encoder of one modality: a module turning a batch's ModalityInput into features. The
/// classifier registers it as "<modality>_encoder" and multiplies its rows by the mask, so a
/// sample lacking the modality contributes nothing, whatever the encoder gives for it.
class ModalityEncoderImpl : public torch::nn::Module {
 public:
  /// Features [B, output_dim()] for the batch's values of the modality.
  virtual torch::Tensor encode(const ModalityInput& input) = 0;
  virtual int64_t output_dim() const = 0;
};

/// What an encoder is built from: the built-ins' typed options and a plug-in's own settings.
struct EncoderContext {
  const TextEncoderOptions& text;
  const ImageEncoderOptions& image;
  const AudioEncoderOptions& audio;
  const ModalitySettings& settings;
};

using EncoderFactory = std::function<std::shared_ptr<ModalityEncoderImpl>(const EncoderContext&)>;

/// Registers the encoder of plug-in modality `name`. Throws Error when it has one already.
void register_modality_encoder(const std::string& name, EncoderFactory factory);
/// An encoder for modality `name`. Throws Error naming the modality when none is registered.
std::shared_ptr<ModalityEncoderImpl> make_modality_encoder(const std::string& name,
                                                           const EncoderContext& context);

}  // namespace mmintent
