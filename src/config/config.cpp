#include "mmintent/config/config.h"

#include <algorithm>
#include <cctype>

namespace mmintent {

bool ServeConfig::valid_adapter_name(const std::string& name) {
  // It appears in requests, metric labels and the feedback log.
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char ch) {
           return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-';
         });
}

bool ModelConfig::uses(const std::string& modality) const {
  return std::find(modalities.begin(), modalities.end(), modality) != modalities.end();
}

TrainerOptions Config::trainer_options() const {
  TrainerOptions t = train;
  t.device = runtime.device;
  t.precision = runtime.precision;
  t.seed = static_cast<uint64_t>(runtime.seed);
  t.gradient_bucket_bytes = std::max<int64_t>(1, static_cast<int64_t>(distributed.bucket_mb * (1 << 20)));
  if (!train.distill.teacher.empty()) {
    t.loss.distill_alpha = train.distill.alpha;
    t.loss.distill_temperature = train.distill.temperature;
  }
  return t;
}

IntentClassifierOptions Config::model_options(int64_t vocab_size, int64_t num_classes) const {
  IntentClassifierOptions o;
  o.num_classes(num_classes);
  o.modalities(model.modalities);
  o.plugins(model.plugins);
  auto text = model.text_encoder;
  text.vocab_size(vocab_size);
  o.text(text);
  auto image = model.image_encoder;
  image.in_channels(data.image.channels);
  o.image(image);
  auto audio = model.audio_encoder;
  audio.n_mels(data.audio.n_mels);
  audio.global_norm(data.audio.normalize == "global");
  o.audio(audio);
  o.fusion(model.fusion);
  o.head(model.head);
  return o;
}

}  // namespace mmintent
