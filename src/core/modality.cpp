#include "mmintent/core/modality.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <mutex>

namespace mmintent {
namespace {

struct Registry {
  std::mutex mutex;
  std::vector<std::string> names{"text", "image", "audio"};
  std::map<std::string, SettingsCheck> checks;
};

Registry& registry() {
  static Registry r;
  return r;
}

bool is_identifier(const std::string& s) {
  if (s.empty() || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

std::string ModalitySettings::text(const std::string& key, const std::string& fallback) const {
  const auto it = values.find(key);
  return it == values.end() ? fallback : it->second;
}

int64_t ModalitySettings::integer(const std::string& key, int64_t fallback, int64_t min,
                                  int64_t max) const {
  const auto it = values.find(key);
  if (it == values.end()) return fallback;
  const std::string& s = it->second;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE) {
    throw SettingError(key, "expected an integer, found '" + s + "'");
  }
  if (v < min || v > max) {
    throw SettingError(key, "value " + s + " is out of range: must be >= " + std::to_string(min) +
                                " and <= " + std::to_string(max));
  }
  return v;
}

double ModalitySettings::number(const std::string& key, double fallback, double min, double max) const {
  const auto it = values.find(key);
  if (it == values.end()) return fallback;
  const std::string& s = it->second;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(v)) {
    throw SettingError(key, "expected a finite number, found '" + s + "'");
  }
  if (v < min || v > max) {
    throw SettingError(key, "value " + s + " is out of range: must be >= " + std::to_string(min) +
                                " and <= " + std::to_string(max));
  }
  return v;
}

bool ModalitySettings::flag(const std::string& key, bool fallback) const {
  const auto it = values.find(key);
  if (it == values.end()) return fallback;
  const std::string& s = it->second;
  if (s == "true" || s == "yes" || s == "on" || s == "1") return true;
  if (s == "false" || s == "no" || s == "off" || s == "0") return false;
  throw SettingError(key, "expected true or false, found '" + s + "'");
}

void ModalitySettings::check_keys(const std::vector<std::string>& known) const {
  for (const auto& [key, value] : values) {
    if (key == "field" || key == "allow_missing") continue;
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string list = "field, allow_missing";
    for (const auto& k : known) list += ", " + k;
    throw SettingError(key, "unknown key for modality '" + modality + "'; known keys: " + list);
  }
  if (field().empty()) throw SettingError("field", "must name a manifest field");
  allow_missing();  // throws for a value that is not a flag
}

std::vector<std::string> modality_names() {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.names;
}

bool is_builtin_modality(const std::string& name) {
  return name == "text" || name == "image" || name == "audio";
}

void add_modality_name(const std::string& name, SettingsCheck check) {
  if (!is_identifier(name)) {
    throw Error("register_modality: '" + name +
                "' is not a valid modality name (lower-case letters, digits and _, starting "
                "with a letter)");
  }
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (std::find(r.names.begin(), r.names.end(), name) != r.names.end()) {
    throw Error("register_modality: a modality named '" + name + "' is already registered");
  }
  r.names.push_back(name);
  if (check) r.checks[name] = std::move(check);
}

void check_modality_settings(const ModalitySettings& settings) {
  SettingsCheck check;
  {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = r.checks.find(settings.modality);
    if (it != r.checks.end()) check = it->second;
  }
  if (check) check(settings);
  else settings.check_keys({});
}

std::vector<std::string> canonical_order(const std::vector<std::string>& names) {
  const auto all = modality_names();
  std::vector<std::string> out;
  for (const auto& n : all) {
    if (std::find(names.begin(), names.end(), n) != names.end()) out.push_back(n);
  }
  for (const auto& n : names) {
    if (std::find(all.begin(), all.end(), n) == all.end()) out.push_back(n);
  }
  return out;
}

}  // namespace mmintent
