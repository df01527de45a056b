#include "mmintent/data/image.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <optional>
#include <random>

#include "mmintent/error.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxSide = 16384;

struct Size2 {
  uint64_t width = 0, height = 0;
};

uint32_t be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint32_t le16(const uint8_t* p) { return uint32_t{p[0]} | (uint32_t{p[1]} << 8); }
uint32_t le24(const uint8_t* p) { return le16(p) | (uint32_t{p[2]} << 16); }
uint32_t le32(const uint8_t* p) { return le24(p) | (uint32_t{p[3]} << 24); }

bool is_jpeg(const std::vector<uint8_t>& d) {
  return d.size() >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF;
}

/// Width and height of a PBM/PGM/PPM/PFM header ("P5 # comment\n 640 480 ..."); nullopt when
/// the header is malformed or cut short.
std::optional<Size2> pnm_size(const std::vector<uint8_t>& d) {
  std::size_t i = 2;
  uint64_t values[2] = {0, 0};
  for (auto& v : values) {
    while (i < d.size() && (std::isspace(d[i]) || d[i] == '#')) {
      if (d[i] == '#') {
        while (i < d.size() && d[i] != '\n') ++i;
      } else {
        ++i;
      }
    }
    if (i >= d.size() || !std::isdigit(d[i])) return std::nullopt;
    for (int digits = 0; i < d.size() && std::isdigit(d[i]); ++i) {
      if (++digits > 12) return std::nullopt;  // absurd: let the decoder refuse it
      v = v * 10 + (d[i] - '0');
    }
  }
  return Size2{values[0], values[1]};
}

/// Width and height from the first image file directory of a (classic, not Big) TIFF; nullopt
/// when the directory lies outside `d` or lacks the tags.
std::optional<Size2> tiff_size(const std::vector<uint8_t>& d, bool little_endian) {
  const std::size_t n = d.size();
  const uint8_t* p = d.data();
  auto u16 = [&](std::size_t at) { return little_endian ? le16(p + at) : be16(p + at); };
  auto u32 = [&](std::size_t at) { return little_endian ? le32(p + at) : be32(p + at); };
  const std::size_t ifd = u32(4);
  if (ifd + 2 > n) return std::nullopt;
  const std::size_t entries = u16(ifd);
  uint64_t width = 0, height = 0;
  bool has_width = false, has_height = false;
  for (std::size_t k = 0; k < entries; ++k) {
    const std::size_t e = ifd + 2 + 12 * k;
    if (e + 12 > n) return std::nullopt;
    const uint32_t tag = u16(e), type = u16(e + 2);
    if (tag != 256 && tag != 257) continue;
    uint64_t value = 0;
    if (type == 3) {
      value = u16(e + 8);  // SHORT
    } else if (type == 4) {
      value = u32(e + 8);  // LONG
    } else {
      return std::nullopt;
    }
    (tag == 256 ? width : height) = value;
    (tag == 256 ? has_width : has_height) = true;
  }
  if (!has_width || !has_height) return std::nullopt;
  return Size2{width, height};
}

/// Image dimensions read from the file header, for PNG, JPEG, BMP, WebP, PNM (PBM/PGM/PPM/PFM)
/// and TIFF; nullopt for other formats or a header too short to tell (the decoder then
/// decides, within OpenCV's own limit).
std::optional<Size2> header_size(const std::vector<uint8_t>& d) {
  const std::size_t n = d.size();
  const uint8_t* p = d.data();
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n >= 24 && std::memcmp(p, kPng, 8) == 0 && std::memcmp(p + 12, "IHDR", 4) == 0) {
    return Size2{be32(p + 16), be32(p + 20)};
  }
  if (is_jpeg(d)) {
    std::size_t i = 2;
    while (i + 1 < n) {
      if (p[i] != 0xFF) return std::nullopt;
      while (i < n && p[i] == 0xFF) ++i;  // fill bytes
      if (i >= n) return std::nullopt;
      const uint8_t marker = p[i++];
      if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;
      if (marker == 0xD9 || marker == 0xDA) return std::nullopt;  // no frame header before data
      if (i + 2 > n) return std::nullopt;
      const std::size_t length = be16(p + i);
      const bool sof =
          marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) {
        if (i + 7 > n) return std::nullopt;
        return Size2{be16(p + i + 5), be16(p + i + 3)};
      }
      if (length < 2) return std::nullopt;
      i += length;
    }
    return std::nullopt;
  }
  if (n >= 26 && p[0] == 'B' && p[1] == 'M') {
    if (le32(p + 14) == 12) return Size2{le16(p + 18), le16(p + 20)};  // BITMAPCOREHEADER
    const auto h = static_cast<int32_t>(le32(p + 22));
    return Size2{le32(p + 18), static_cast<uint64_t>(std::llabs(static_cast<long long>(h)))};
  }
  if (n >= 30 && std::memcmp(p, "RIFF", 4) == 0 && std::memcmp(p + 8, "WEBP", 4) == 0) {
    if (std::memcmp(p + 12, "VP8 ", 4) == 0)
      return Size2{le16(p + 26) & 0x3FFF, le16(p + 28) & 0x3FFF};
    if (std::memcmp(p + 12, "VP8L", 4) == 0 && p[20] == 0x2F) {
      const uint32_t bits = le32(p + 21);
      return Size2{(bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1};
    }
    if (std::memcmp(p + 12, "VP8X", 4) == 0) return Size2{le24(p + 24) + 1u, le24(p + 27) + 1u};
  }
  if (n >= 3 && p[0] == 'P' && ((p[1] >= '1' && p[1] <= '6') || p[1] == 'F' || p[1] == 'f')) {
    return pnm_size(d);
  }
  if (n >= 8 && ((p[0] == 'I' && p[1] == 'I' && le16(p + 2) == 42) ||
                 (p[0] == 'M' && p[1] == 'M' && be16(p + 2) == 42))) {
    return tiff_size(d, p[0] == 'I');
  }
  return std::nullopt;
}

/// OpenCV 4 refuses (by default) to decode an image above 2^30 pixels or 2^20 pixels a side.
constexpr uint64_t kDecoderMaxPixels = uint64_t{1} << 30;
constexpr uint64_t kDecoderMaxSide = uint64_t{1} << 20;

/// The head of the file read before anything else: enough for the size in every header
/// header_size parses (a JPEG's frame header can follow large EXIF segments).
constexpr std::size_t kHeadBytes = 256 * 1024;

std::string pixel_count(uint64_t width, uint64_t height) {
  std::string s = std::to_string(width) + "x" + std::to_string(height);
  if (height == 0 || width <= UINT64_MAX / height) s += " = " + std::to_string(width * height);
  return s + " pixels";
}

/// Throws DataError unless width x height is non-zero, at most `max_pixels` and within what
/// the decoder accepts. Overflow-safe for any 64-bit sizes.
void check_size(const std::string& path, uint64_t width, uint64_t height, int64_t max_pixels) {
  if (width == 0 || height == 0) throw DataError(path, 0, "image header gives a zero width or height");
  if (width > static_cast<uint64_t>(max_pixels) / height) {
    throw DataError(path, 0, "image is " + pixel_count(width, height) + ", above max_pixels = " +
                                 std::to_string(max_pixels) + " (data.image.max_pixels)");
  }
  if (width > kDecoderMaxPixels / height || width > kDecoderMaxSide || height > kDecoderMaxSide) {
    throw DataError(path, 0, "image is " + pixel_count(width, height) +
                                 ", more than the decoder (OpenCV) accepts: at most " +
                                 std::to_string(kDecoderMaxPixels) + " pixels and " +
                                 std::to_string(kDecoderMaxSide) + " a side");
  }
}

/// Reads the whole image file. The head is read first and the size its header gives is checked
/// against `max_pixels` before the rest is read, so a huge image costs no memory.
std::vector<uint8_t> read_image_file(const std::string& path, int64_t max_pixels) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) throw DataError(path, 0, "image file not found");
  if (fs::is_directory(status)) throw DataError(path, 0, "image path is a directory");
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw DataError(path, 0, std::string("cannot open image: ") +
                                 (errno != 0 ? std::strerror(errno) : "unknown error"));
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw DataError(path, 0, "cannot read image: cannot tell its size");
  if (size == 0) throw DataError(path, 0, "image file is empty (0 bytes)");
  in.seekg(0, std::ios::beg);
  const auto total = static_cast<std::size_t>(size);
  std::vector<uint8_t> bytes(std::min(total, kHeadBytes));
  auto read_to_end = [&](std::size_t from) {
    in.read(reinterpret_cast<char*>(bytes.data() + from), static_cast<std::streamsize>(bytes.size() - from));
    if (in.gcount() != static_cast<std::streamsize>(bytes.size() - from)) {
      throw DataError(path, 0, "cannot read image: short read");
    }
  };
  read_to_end(0);
  std::optional<Size2> header = header_size(bytes);
  if (header) check_size(path, header->width, header->height, max_pixels);
  if (bytes.size() < total) {
    const std::size_t head = bytes.size();
    bytes.resize(total);
    read_to_end(head);
    if (!header) {
      header = header_size(bytes);
      if (header) check_size(path, header->width, header->height, max_pixels);
    }
  }
  return bytes;
}

/// An OpenCV exception's bare message (first line, without the "OpenCV(4.x) file:line:"
/// prefix) and the function that raised it.
std::string opencv_reason(const cv::Exception& e) {
  std::string msg = e.err.empty() ? std::string(e.what()) : e.err;
  if (const auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
  if (!e.func.empty()) msg += " (in " + e.func + ")";
  return msg;
}

/// Uniform double in [0, 1) from 53 random bits (same on every platform).
double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

float clamp01(float v) { return v < 0.f ? 0.f : (v > 1.f ? 1.f : v); }

}  // namespace

void validate(const ImageOptions& options) {
  auto side = [](const char* name, int64_t v) {
    if (v < 1 || v > kMaxSide) {
      throw Error(std::string("image ") + name + " must be in [1, " + std::to_string(kMaxSide) +
                  "], found " + std::to_string(v));
    }
  };
  side("width", options.width);
  side("height", options.height);
  if (options.channels != 1 && options.channels != 3) {
    throw Error("image channels must be 1 or 3, found " + std::to_string(options.channels));
  }
  auto count = [&](const char* name, const std::vector<double>& values) {
    if (values.size() != 1 && static_cast<int64_t>(values.size()) != options.channels) {
      throw Error(std::string("image ") + name + " needs " +
                  (options.channels == 1 ? std::string("1 value")
                                         : "1 or " + std::to_string(options.channels) + " values") +
                  " (one per channel or one for all), found " + std::to_string(values.size()));
    }
    for (double v : values) {
      if (!std::isfinite(v)) throw Error(std::string("image ") + name + " values must be finite");
    }
  };
  count("mean", options.mean);
  count("std", options.std);
  for (double s : options.std) {
    if (!(s > 0)) throw Error("image std values must be > 0, found " + std::to_string(s));
  }
  if (options.max_pixels < 1) {
    throw Error("image max_pixels must be >= 1, found " + std::to_string(options.max_pixels));
  }
}

void validate(const AugmentOptions& options) {
  if (options.crop_padding < 0) {
    throw Error("augment crop_padding must be >= 0, found " + std::to_string(options.crop_padding));
  }
  if (!(options.hflip >= 0 && options.hflip <= 1)) {
    throw Error("augment hflip must be a probability in [0, 1], found " +
                std::to_string(options.hflip));
  }
  if (!(options.brightness >= 0 && std::isfinite(options.brightness))) {
    throw Error("augment brightness must be >= 0, found " + std::to_string(options.brightness));
  }
  if (!(options.contrast >= 0 && options.contrast <= 1)) {
    throw Error("augment contrast must be in [0, 1], found " + std::to_string(options.contrast));
  }
}

namespace {
/// Decodes an image file's bytes (`path` names it in messages), converts it to the options'
/// channels and resizes it.
DecodedImage decode(const std::vector<uint8_t>& bytes, const ImageOptions& options,
                    const std::string& path) {
  if (is_jpeg(bytes)) {
    // libjpeg pads a truncated JPEG with grey and only warns; insist on the end-of-image marker.
    bool has_eoi = false;
    for (std::size_t i = bytes.size(); i >= 2 && !has_eoi; --i) {
      has_eoi = bytes[i - 2] == 0xFF && bytes[i - 1] == 0xD9;
    }
    if (!has_eoi) throw DataError(path, 0, "truncated JPEG (no end-of-image marker)");
  }

  cv::Mat decoded;
  const int flags = options.channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8U,
                         const_cast<uint8_t*>(bytes.data()));
    decoded = cv::imdecode(buffer, flags);
  } catch (const cv::Exception& e) {
    throw DataError(path, 0, "cannot decode image: " + opencv_reason(e));
  }
  if (decoded.empty()) {
    throw DataError(path, 0,
                    "cannot decode image (not an image, an unsupported format or a truncated "
                    "file)");
  }
  check_size(path, static_cast<uint64_t>(decoded.cols), static_cast<uint64_t>(decoded.rows),
             options.max_pixels);

  try {
    if (options.channels == 3) cv::cvtColor(decoded, decoded, cv::COLOR_BGR2RGB);
    const int tw = static_cast<int>(options.width), th = static_cast<int>(options.height);
    if (decoded.cols != tw || decoded.rows != th) {
      const bool shrinking = tw <= decoded.cols && th <= decoded.rows;
      cv::Mat resized;
      cv::resize(decoded, resized, cv::Size(tw, th), 0, 0,
                 shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
      decoded = resized;
    }
  } catch (const cv::Exception& e) {
    throw DataError(path, 0, "cannot convert image: " + opencv_reason(e));
  }
  if (!decoded.isContinuous()) decoded = decoded.clone();

  DecodedImage out;
  out.height = options.height;
  out.width = options.width;
  out.channels = options.channels;
  const std::size_t n = static_cast<std::size_t>(out.height * out.width * out.channels);
  out.pixels.assign(decoded.data, decoded.data + n);
  return out;
}
}  // namespace

DecodedImage load_image(const std::string& path, const ImageOptions& options) {
  validate(options);
  return decode(read_image_file(path, options.max_pixels), options, path);
}

DecodedImage decode_image(const std::vector<uint8_t>& bytes, const ImageOptions& options,
                          const std::string& name) {
  validate(options);
  if (bytes.empty()) throw DataError(name, 0, "image is empty (0 bytes)");
  if (const auto header = header_size(bytes)) {
    check_size(name, header->width, header->height, options.max_pixels);
  }
  return decode(bytes, options, name);
}

void image_to_chw(const DecodedImage& image, const ImageOptions& options,
                  const AugmentOptions* augment, uint64_t seed, float* out) {
  validate(options);
  const int64_t H = options.height, W = options.width, C = options.channels;
  if (image.height != H || image.width != W || image.channels != C) {
    throw Error("image_to_chw: image is " + std::to_string(image.height) + "x" +
                std::to_string(image.width) + "x" + std::to_string(image.channels) +
                " (HxWxC) but the options ask for " + std::to_string(H) + "x" + std::to_string(W) +
                "x" + std::to_string(C));
  }
  if (static_cast<int64_t>(image.pixels.size()) != H * W * C) {
    throw Error("image_to_chw: image has " + std::to_string(image.pixels.size()) +
                " bytes, expected " + std::to_string(H * W * C));
  }
  if (out == nullptr) throw Error("image_to_chw: output pointer is null");

  float mean[3], inv_std[3];
  for (int64_t c = 0; c < C; ++c) {
    const auto k = static_cast<std::size_t>(c);
    mean[c] = static_cast<float>(options.mean.size() == 1 ? options.mean[0] : options.mean[k]);
    inv_std[c] =
        static_cast<float>(1.0 / (options.std.size() == 1 ? options.std[0] : options.std[k]));
  }
  constexpr float kToUnit = 1.0f / 255.0f;
  const uint8_t* px = image.pixels.data();
  const int64_t plane = H * W;

  if (augment == nullptr || !augment->enabled) {
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t x = 0; x < W; ++x) {
        const uint8_t* p = px + (y * W + x) * C;
        for (int64_t c = 0; c < C; ++c) {
          out[c * plane + y * W + x] = (static_cast<float>(p[c]) * kToUnit - mean[c]) * inv_std[c];
        }
      }
    }
    return;
  }

  validate(*augment);
  // Draw every random choice up front, in a fixed order, from a private generator.
  std::mt19937_64 rng(seed);
  const int64_t pad = augment->crop_padding;
  int64_t off_y = pad, off_x = pad;
  if (pad > 0) {
    const auto span = static_cast<uint64_t>(2 * pad + 1);
    off_y = static_cast<int64_t>(rng() % span);
    off_x = static_cast<int64_t>(rng() % span);
  }
  const bool flip = augment->hflip > 0 && uniform01(rng) < augment->hflip;
  const float brightness =
      augment->brightness > 0
          ? static_cast<float>((2.0 * uniform01(rng) - 1.0) * augment->brightness)
          : 0.f;
  const float contrast =
      augment->contrast > 0
          ? static_cast<float>(1.0 + (2.0 * uniform01(rng) - 1.0) * augment->contrast)
          : 1.f;

  // Pass 1: crop (edge-replicated padding), flip and brightness, on the [0,1] scale, into out.
  double sum = 0;
  for (int64_t y = 0; y < H; ++y) {
    const int64_t sy = std::clamp<int64_t>(y + off_y - pad, 0, H - 1);
    for (int64_t x = 0; x < W; ++x) {
      const int64_t fx = flip ? W - 1 - x : x;
      const int64_t sx = std::clamp<int64_t>(fx + off_x - pad, 0, W - 1);
      const uint8_t* p = px + (sy * W + sx) * C;
      for (int64_t c = 0; c < C; ++c) {
        float v = static_cast<float>(p[c]) * kToUnit;
        if (brightness != 0.f) v = clamp01(v + brightness);
        out[c * plane + y * W + x] = v;
        sum += v;
      }
    }
  }
  // Pass 2: contrast around the image's mean intensity, then normalise.
  const auto m = static_cast<float>(sum / static_cast<double>(C * plane));
  for (int64_t c = 0; c < C; ++c) {
    float* o = out + c * plane;
    for (int64_t i = 0; i < plane; ++i) {
      float v = o[i];
      if (contrast != 1.f) v = clamp01((v - m) * contrast + m);
      o[i] = (v - mean[c]) * inv_std[c];
    }
  }
}

}  // namespace mmintent
