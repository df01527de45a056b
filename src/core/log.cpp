#include "mmintent/core/log.h"

#include <cstdio>
#include <mutex>

namespace mmintent::log {
namespace {
std::mutex& sink_mutex() {
  static std::mutex m;
  return m;
}
Sink& current_sink() {
  static Sink sink;
  return sink;
}
const char* level_name(Level level) {
  switch (level) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warning";
    case Level::error: return "error";
  }
  return "?";
}
}  // namespace

void set_sink(Sink sink) {
  std::lock_guard<std::mutex> lock(sink_mutex());
  current_sink() = std::move(sink);
}

void write(Level level, const std::string& component, const std::string& message) {
  std::lock_guard<std::mutex> lock(sink_mutex());
  if (current_sink()) {
    current_sink()(level, component, message);
    return;
  }
  if (level == Level::debug) return;
  std::fprintf(stderr, "[%s] [%s] %s\n", level_name(level), component.c_str(), message.c_str());
}

}  // namespace mmintent::log
