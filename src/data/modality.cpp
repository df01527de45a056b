#include "mmintent/data/modality.h"

#include "data/modalities/builtin.h"
#include "mmintent/core/registry.h"
#include "mmintent/error.h"

namespace mmintent {
namespace {

detail::FactoryRegistry<ReaderFactory>& readers() {
  static detail::FactoryRegistry<ReaderFactory> registry("a reader");
  return registry;
}

}  // namespace

void register_modality_reader(const std::string& name, ReaderFactory factory) {
  readers().add(name, std::move(factory));
}

std::unique_ptr<ModalityReader> make_modality_reader(const std::string& name,
                                                     const ReaderContext& context) {
  if (name == "text") return std::make_unique<detail::TextReader>(context);
  if (name == "image") return std::make_unique<detail::ImageReader>(context);
  if (name == "audio") return std::make_unique<detail::AudioReader>(context);
  const ReaderFactory factory = readers().get(name);
  auto reader = factory(context);
  if (!reader) throw Error("the reader factory of modality '" + name + "' returned null");
  return reader;
}

const std::string& record_value(const Record& r, const std::string& name) {
  static const std::string none;
  if (name == "text") return r.text;
  if (name == "image") return r.image;
  const auto it = r.inputs.find(name);
  return it == r.inputs.end() ? none : it->second;
}

}  // namespace mmintent
