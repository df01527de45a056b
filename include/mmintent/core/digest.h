#pragma once
/// SHA-256 (FIPS 180-4), the digest that names a run's weights: the server's model version, the
/// base a low-rank adapter was trained over, the API keys' hashes.

#include <filesystem>
#include <string>
#include <string_view>

namespace mmintent {

/// The lowercase hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);
/// The lowercase hex SHA-256 of a file's content. Throws DataError(path, 0, ...) when it cannot
/// be read (core/files.h's messages).
std::string sha256_file_hex(const std::filesystem::path& path);

}  // namespace mmintent
