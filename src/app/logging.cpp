#include "mmintent/app/logging.h"

#include "mmintent/core/log.h"
#include "mmintent/error.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>

namespace mmintent {
namespace {

std::string console_level = "info";

spdlog::level::level_enum parse_level(const std::string& level) {
  for (const char* known : {"debug", "info", "warn", "error"}) {
    if (level == known) return spdlog::level::from_str(level);
  }
  throw Error("log level '" + level + "' is not one of debug, info, warn, error");
}

}  // namespace

void set_console_log_level(const std::string& level) {
  parse_level(level);
  console_level = level;
}

void setup_logging(const std::string& level, const std::string& file, const std::string& tag) {
  const auto console = parse_level(level.empty() ? console_level : level);
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  sinks.back()->set_level(console);
  auto lowest = console;
  if (!file.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, false));
    const auto in_file = std::min(console, spdlog::level::info);  // a run's log stays complete
    sinks.back()->set_level(in_file);
    lowest = std::min(lowest, in_file);
  }
  auto logger = std::make_shared<spdlog::logger>("mmintent", sinks.begin(), sinks.end());
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e " + (tag.empty() ? std::string() : "[" + tag + "] ") +
                      "%^%l%$ %v");
  logger->set_level(lowest);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  log::set_sink([](log::Level lvl, const std::string& component, const std::string& message) {
    const auto line = "[" + component + "] " + message;
    switch (lvl) {
      case log::Level::debug: spdlog::debug(line); break;
      case log::Level::info: spdlog::info(line); break;
      case log::Level::warn: spdlog::warn(line); break;
      case log::Level::error: spdlog::error(line); break;
    }
  });
}

}  // namespace mmintent
