#include "data/idx.h"

#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace mmintent::detail {
namespace {

namespace fs = std::filesystem;

std::vector<std::uint8_t> read_gzip(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw IdxError(path, fs::exists(path, ec) ? "not a regular file" : "file not found");
  }
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) throw IdxError(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<std::uint8_t> data;
  std::vector<std::uint8_t> chunk(1 << 20);
  for (;;) {
    const int n = gzread(file, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int code = 0;
      const std::string message = gzerror(file, &code);
      gzclose(file);
      throw IdxError(path, "cannot decompress: " + message);
    }
    if (n == 0) break;
    data.insert(data.end(), chunk.begin(), chunk.begin() + n);
  }
  gzclose(file);
  return data;
}

std::uint32_t be32(const std::vector<std::uint8_t>& data, std::size_t offset) {
  return (std::uint32_t{data[offset]} << 24) | (std::uint32_t{data[offset + 1]} << 16) |
         (std::uint32_t{data[offset + 2]} << 8) | std::uint32_t{data[offset + 3]};
}

std::string hex32(std::uint32_t value) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "0x%08x", value);
  return buffer;
}

/// Throws unless `data` holds at least the `header_bytes` of an IDX header and starts with
/// `magic` (`layout`: what the magic number stands for).
void check_header(const std::string& path, const std::vector<std::uint8_t>& data,
                  std::size_t header_bytes, std::uint32_t magic, const char* layout) {
  if (data.size() < header_bytes) {
    throw IdxError(path, "truncated IDX header: " + std::to_string(data.size()) +
                             " bytes after decompression, expected at least " +
                             std::to_string(header_bytes));
  }
  if (be32(data, 0) != magic) {
    throw IdxError(path, "byte offset 0 (after decompression): bad IDX magic number " +
                             hex32(be32(data, 0)) + ", expected " + hex32(magic) + " (" + layout +
                             ")");
  }
}

}  // namespace

IdxImages read_idx_images(const std::string& images_path, const std::string& labels_path) {
  IdxImages set;
  const std::string& ipath = images_path;
  const std::string& lpath = labels_path;
  std::vector<std::uint8_t> images = read_gzip(ipath);
  check_header(ipath, images, 16, 0x00000803, "unsigned bytes, 3 dimensions");
  const std::uint32_t count = be32(images, 4), rows = be32(images, 8), cols = be32(images, 12);
  if (rows != kIdxImageSide || cols != kIdxImageSide) {
    throw IdxError(ipath, "byte offset 8 (after decompression): images are " +
                              std::to_string(rows) + "x" + std::to_string(cols) +
                              ", expected 28x28");
  }
  const std::size_t expected = 16 + std::size_t{count} * kIdxImagePixels;
  if (images.size() != expected) {
    throw IdxError(ipath, std::to_string(images.size()) + " bytes after decompression, expected " +
                              std::to_string(expected) + " for " + std::to_string(count) +
                              " images of 28x28 (truncated or corrupt)");
  }
  if (count == 0) throw IdxError(ipath, "holds no images");
  set.count = count;
  set.pixels.assign(images.begin() + 16, images.end());
  images = {};  // the labels file is read next: do not hold both copies of the pixels

  const std::vector<std::uint8_t> labels = read_gzip(lpath);
  check_header(lpath, labels, 8, 0x00000801, "unsigned bytes, 1 dimension");
  const std::uint32_t label_count = be32(labels, 4);
  if (label_count != count) {
    throw IdxError(lpath, "holds " + std::to_string(label_count) + " labels, but " + ipath +
                              " holds " + std::to_string(count) + " images");
  }
  if (labels.size() != 8 + std::size_t{label_count}) {
    throw IdxError(lpath, std::to_string(labels.size()) + " bytes after decompression, expected " +
                              std::to_string(8 + std::size_t{label_count}) +
                              " (truncated or corrupt)");
  }
  set.labels.assign(labels.begin() + 8, labels.end());
  for (std::size_t i = 0; i < set.labels.size(); ++i) {
    if (set.labels[i] >= kIdxNumClasses) {
      throw IdxError(lpath, "byte offset " + std::to_string(8 + i) +
                                " (after decompression): label " + std::to_string(i + 1) + " is " +
                                std::to_string(set.labels[i]) + ", expected a class id 0..9");
    }
  }
  return set;
}

}  // namespace mmintent::detail
