#include "mmintent/core/files.h"

#include "mmintent/error.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace mmintent {
namespace fs = std::filesystem;

std::string read_file(const fs::path& path, const std::string& what) {
  std::error_code ec;
  const auto fail = [&](const std::string& why) { return DataError(path.string(), 0, "cannot open " + what + ": " + why); };
  if (!fs::exists(path, ec)) throw fail("file not found");
  if (fs::is_directory(path, ec)) throw fail("is a directory");
  if (!fs::is_regular_file(path, ec)) throw fail("not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw fail(std::strerror(errno));
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) throw DataError(path.string(), 0, "cannot read " + what + ": I/O error");
  return content.str();
}

}  // namespace mmintent
