#include "mmintent/error.h"

namespace mmintent {
namespace {
std::string config_message(const std::string& file, const std::string& key, int line,
                           const std::string& message) {
  std::string where = file.empty() ? "<config>" : file;
  if (line > 0) where += ":" + std::to_string(line);
  if (!key.empty()) where += ": key '" + key + "'";
  return where + ": " + message;
}
std::string data_message(const std::string& file, long line, const std::string& message) {
  std::string where = file;
  if (line > 0) where += ":" + std::to_string(line);
  return where + ": " + message;
}
}  // namespace

ConfigError::ConfigError(std::string file, std::string key, int line, const std::string& message)
    : Error(config_message(file, key, line, message)),
      file_(std::move(file)),
      key_(std::move(key)),
      line_(line) {}

DataError::DataError(std::string file, long line, const std::string& message)
    : Error(data_message(file, line, message)), file_(std::move(file)), line_(line) {}

}  // namespace mmintent
