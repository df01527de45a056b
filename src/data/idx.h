#pragma once
/// Reader for the gzip-compressed IDX files of Fashion-MNIST (and MNIST): one images file
/// (magic 0x00000803, n x 28 x 28 unsigned bytes) and one labels file (magic 0x00000801, n
/// class ids 0..9). Internal: shared by the Fashion-MNIST importer and mmintent_make_demo,
/// which links neither LibTorch nor libmmintent, so this needs only zlib and throws its own
/// error type (the importer turns it into a DataError).

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mmintent::detail {

constexpr int kIdxImageSide = 28;
constexpr std::size_t kIdxImagePixels = std::size_t{kIdxImageSide} * kIdxImageSide;
constexpr int kIdxNumClasses = 10;

/// A malformed or unreadable IDX file: what() is "FILE: REASON".
class IdxError : public std::runtime_error {
 public:
  IdxError(std::string file, std::string reason)
      : std::runtime_error(file + ": " + reason), file_(std::move(file)), reason_(std::move(reason)) {}
  const std::string& file() const noexcept { return file_; }
  /// What is wrong, without the file name.
  const std::string& reason() const noexcept { return reason_; }

 private:
  std::string file_;
  std::string reason_;
};

/// One images file and its labels file.
struct IdxImages {
  std::size_t count = 0;
  std::vector<std::uint8_t> pixels;  ///< count x 28 x 28, row-major
  std::vector<std::uint8_t> labels;  ///< count class ids 0..9
};

/// Reads and checks both files. Throws IdxError naming the file for a missing or unreadable
/// file, a bad magic number, images that are not 28x28, truncated data, no images, mismatched
/// image and label counts, or a label above 9 (offsets are in the decompressed bytes).
IdxImages read_idx_images(const std::string& images_path, const std::string& labels_path);

}  // namespace mmintent::detail
