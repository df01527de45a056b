#include "mmintent/data/modality.h"

#include "data/modalities/builtin.h"
#include "mmintent/error.h"

#include <map>
#include <mutex>

namespace mmintent {
namespace {

struct Readers {
  std::mutex mutex;
  std::map<std::string, ReaderFactory> factories;
};

Readers& readers() {
  static Readers r;
  return r;
}

}  // namespace

void register_modality_reader(const std::string& name, ReaderFactory factory) {
  if (is_builtin_modality(name)) throw Error("register_modality: '" + name + "' is built in");
  auto& r = readers();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (!r.factories.emplace(name, std::move(factory)).second) {
    throw Error("register_modality: modality '" + name + "' has a reader already");
  }
}

std::unique_ptr<ModalityReader> make_modality_reader(const std::string& name,
                                                     const ReaderContext& context) {
  if (name == "text") return std::make_unique<detail::TextReader>(context);
  if (name == "image") return std::make_unique<detail::ImageReader>(context);
  ReaderFactory factory;
  {
    auto& r = readers();
    std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = r.factories.find(name);
    if (it != r.factories.end()) factory = it->second;
  }
  if (!factory) {
    throw Error("no reader is registered for modality '" + name +
                "' (register it with register_modality, run/plugins.h)");
  }
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
