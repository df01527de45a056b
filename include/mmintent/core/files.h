#pragma once
/// Reading a whole file, with the errors every reader of user files gives.

#include <filesystem>
#include <string>

namespace mmintent {

/// The bytes of the file at `path`. `what` names it in errors ("manifest", "feedback log").
/// Throws DataError(path, 0, ...) saying "cannot open WHAT: file not found", "... is a
/// directory", "... not a regular file" or the system's reason, or "cannot read WHAT: I/O error".
std::string read_file(const std::filesystem::path& path, const std::string& what = "file");

}  // namespace mmintent
