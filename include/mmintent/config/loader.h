#pragma once
/// Reading, overriding, validating and writing configs. Every key is checked: unknown keys,
/// wrong types, out-of-range values and missing files are ConfigErrors naming the file, the
/// dotted key path and the line.

#include "mmintent/config/config.h"

#include <string>
#include <vector>

namespace mmintent {

/// Loads `path`, applies `overrides` ("train.optimizer.lr=3e-4", values parsed as YAML), then
/// validates. Relative paths in the file resolve against the file's folder; relative paths in
/// overrides and output.dir resolve against the current directory.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

/// Parses YAML text (as if read from `origin`); for tests and embedding apps.
Config parse_config(const std::string& yaml_text, const std::string& origin,
                    const std::vector<std::string>& overrides = {});

/// The complete effective config as YAML (all keys, defaults included, absolute paths).
std::string to_yaml(const Config& config);

/// Writes to_yaml(config) to `path` atomically.
void save_config(const Config& config, const std::string& path);

}  // namespace mmintent
