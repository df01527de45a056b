#pragma once
/// A thread-safe map of plug-in modalities' factories by name, one per kind of part (readers,
/// encoders). The built-ins are not in it: their makers construct them directly.

#include "mmintent/core/modality.h"
#include "mmintent/error.h"

#include <map>
#include <mutex>
#include <string>

namespace mmintent::detail {

template <class Factory>
class FactoryRegistry {
 public:
  /// `part`: what a factory makes, for messages ("a reader", "an encoder").
  explicit FactoryRegistry(std::string part) : part_(std::move(part)) {}

  /// Throws Error for a built-in name, a null factory or a name that has one already.
  void add(const std::string& name, Factory factory) {
    if (is_builtin_modality(name)) throw Error("register_modality: '" + name + "' is built in");
    if (!factory) throw Error("register_modality: modality '" + name + "' has no " + part_.substr(part_.find(' ') + 1));
    std::lock_guard<std::mutex> lock(mutex_);
    if (!factories_.emplace(name, std::move(factory)).second) {
      throw Error("register_modality: modality '" + name + "' has " + part_ + " already");
    }
  }

  /// The factory of `name`; throws Error naming the modality when none is registered.
  Factory get(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = factories_.find(name);
    if (it == factories_.end()) {
      throw Error("no " + part_.substr(part_.find(' ') + 1) + " is registered for modality '" + name +
                  "' (register it with register_modality, run/plugins.h)");
    }
    return it->second;
  }

 private:
  std::string part_;
  mutable std::mutex mutex_;
  std::map<std::string, Factory> factories_;
};

}  // namespace mmintent::detail
