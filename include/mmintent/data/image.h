#pragma once
/// Image decoding, resizing, normalisation and light augmentation. OpenCV stays inside
/// image.cpp; this header needs only the standard library.

#include "mmintent/data/augment.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mmintent {

/// Target geometry and normalisation of model images.
struct ImageOptions {
  int64_t width = 28, height = 28;  ///< Output size in pixels.
  int64_t channels = 1;             ///< 1 (grey) or 3 (colour, RGB order).
  /// Per-channel mean and standard deviation on the [0,1] scale: one value per channel or a
  /// single value for all. The output is (x/255 - mean) / std.
  std::vector<double> mean{0.5};
  std::vector<double> std{0.5};
  /// Images with more pixels (width*height of the stored image) are refused, from the file
  /// header where the format is known (PNG, JPEG, BMP, WebP, PBM/PGM/PPM, TIFF) before the rest
  /// of the file is read, else after decoding. Independently, OpenCV decodes at most 2^30
  /// pixels and 2^20 a side; larger images are refused whatever this says.
  int64_t max_pixels = 40'000'000;
};

/// A decoded image already resized to the target size: HWC uint8, RGB for 3 channels.
struct DecodedImage {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  ///< height*width*channels bytes, row-major HWC.
};

/// Throws Error for non-positive or huge sizes, channels other than 1/3, mean/std counts other
/// than 1 or `channels`, a non-positive or non-finite std, or a non-positive max_pixels.
void validate(const ImageOptions& options);

/// Throws Error for crop_padding < 0, hflip outside [0,1], brightness < 0 or contrast
/// outside [0,1].
void validate(const AugmentOptions& options);

/// Reads and decodes `path`, converts it to options.channels (grey or RGB; alpha dropped),
/// and resizes it to options.height x options.width (INTER_AREA when shrinking both sides,
/// INTER_LINEAR otherwise). Throws DataError(path, 0, reason) for a missing, empty,
/// unreadable, undecodable or truncated file and for one above options.max_pixels.
/// Thread-safe; does not change OpenCV's thread settings.
DecodedImage load_image(const std::string& path, const ImageOptions& options);

/// load_image for an image already in memory (e.g. an upload): `bytes` is the file's content,
/// `name` names it in messages (DataError(name, 0, reason)). The size its header gives is
/// checked against options.max_pixels before decoding.
DecodedImage decode_image(const std::vector<uint8_t>& bytes, const ImageOptions& options,
                          const std::string& name);

/// Writes the normalised CHW floats ((x/255 - mean) / std) of `image` into `out`, which must
/// hold channels*height*width floats. `image` must match the options' size and channels
/// (else Error). When `augment` is non-null and enabled, a random crop/flip/brightness/
/// contrast drawn from std::mt19937_64(seed) is applied first: the same seed gives the same
/// output; no global state, so it may run on several threads at once; no heap allocation.
void image_to_chw(const DecodedImage& image, const ImageOptions& options,
                  const AugmentOptions* augment, uint64_t seed, float* out);

}  // namespace mmintent
