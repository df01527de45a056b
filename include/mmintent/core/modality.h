#pragma once
/// Modalities by name. "text", "image" and "audio" are built in; an application adds its own with
/// register_modality (run/plugins.h), which records the name here so that the configuration
/// accepts it. Nothing here depends on LibTorch: the config check uses it.

#include "mmintent/error.h"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace mmintent {

/// A bad value in a modality's settings (`model.plugins.<modality>.<key>` in the config).
class SettingError : public Error {
 public:
  SettingError(std::string key, const std::string& message)
      : Error(key + ": " + message), key_(std::move(key)), message_(message) {}
  /// The key inside the modality's settings, e.g. "dim".
  const std::string& key() const noexcept { return key_; }
  const std::string& message() const noexcept { return message_; }

 private:
  std::string key_;
  std::string message_;
};

/// A plug-in modality's own settings, `model.plugins.<modality>: {key: value}` in the config,
/// values as written. Two keys are read by the library for every plug-in: `field`, the manifest
/// field (JSON key or CSV column) holding the modality's value (default: the modality's name),
/// and `allow_missing`, whether a record may lack it (default false).
struct ModalitySettings {
  std::string modality;
  std::map<std::string, std::string> values;

  std::string text(const std::string& key, const std::string& fallback) const;
  /// Throws SettingError when the value is no integer or lies outside [min, max].
  int64_t integer(const std::string& key, int64_t fallback, int64_t min = INT64_MIN,
                  int64_t max = INT64_MAX) const;
  /// Throws SettingError when the value is no finite number or lies outside [min, max].
  double number(const std::string& key, double fallback, double min = -1e308, double max = 1e308) const;
  /// true/false (also yes/no, on/off, 1/0). Throws SettingError otherwise.
  bool flag(const std::string& key, bool fallback) const;
  /// Throws SettingError naming the first key that is neither in `known` nor `field` or
  /// `allow_missing`.
  void check_keys(const std::vector<std::string>& known) const;
  /// The manifest field of the modality (`field`, default the modality's name).
  std::string field() const { return text("field", modality); }
  bool allow_missing() const { return flag("allow_missing", false); }
};

/// Checks a modality's settings when the config is read; throws SettingError.
using SettingsCheck = std::function<void(const ModalitySettings&)>;

/// Every known modality in its canonical order: the built-ins ("text", "image", "audio"), then the
/// registered ones in registration order. Models fuse modalities in this order.
std::vector<std::string> modality_names();
bool is_builtin_modality(const std::string& name);
/// Records a plug-in modality's name and its settings check. Throws Error for a name that is
/// taken or is not an identifier ([a-z][a-z0-9_]*).
void add_modality_name(const std::string& name, SettingsCheck check);
/// Runs the registered check of `settings.modality` (nothing for built-ins).
void check_modality_settings(const ModalitySettings& settings);
/// `names` in canonical order (see modality_names); unknown names last, as given.
std::vector<std::string> canonical_order(const std::vector<std::string>& names);

}  // namespace mmintent
