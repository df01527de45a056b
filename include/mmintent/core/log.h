#pragma once
/// Minimal logging front end for the LibTorch-only core. The full library routes it to spdlog
/// (see mmintent/app/logging.h); without it, lines go to stderr. Lines carry a [component] tag.

#include <functional>
#include <string>

namespace mmintent::log {

enum class Level { debug, info, warn, error };

using Sink = std::function<void(Level, const std::string& component, const std::string& message)>;

/// Replaces the process-wide sink (thread-safe). An empty sink restores the stderr default.
void set_sink(Sink sink);
void write(Level level, const std::string& component, const std::string& message);

inline void info(const std::string& component, const std::string& message) {
  write(Level::info, component, message);
}
inline void warn(const std::string& component, const std::string& message) {
  write(Level::warn, component, message);
}
inline void debug(const std::string& component, const std::string& message) {
  write(Level::debug, component, message);
}

}  // namespace mmintent::log
