#include "mmintent/app/logging.h"

#include "mmintent/core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>

namespace mmintent {

void setup_logging(const std::string& level, const std::string& file, const std::string& tag) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!file.empty()) sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, false));
  auto logger = std::make_shared<spdlog::logger>("mmintent", sinks.begin(), sinks.end());
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e " + (tag.empty() ? std::string() : "[" + tag + "] ") +
                      "%^%l%$ %v");
  logger->set_level(spdlog::level::from_str(level));
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
