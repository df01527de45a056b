#include "mmintent/data/image.h"

#include <gtest/gtest.h>

#include <cmath>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <vector>

#include "mmintent/error.h"
#include "support/support.h"

namespace mmintent {
namespace {

using test::TempDir;

/// Writes `image` (BGR or grey) as `name` under `dir` and returns the path.
std::string write_image(const TempDir& dir, const std::string& name, const cv::Mat& image) {
  const std::string path = (dir.path() / name).string();
  EXPECT_TRUE(cv::imwrite(path, image));
  return path;
}

/// A grey gradient image, value (7*y + 3*x) % 256.
cv::Mat gradient(int height, int width) {
  cv::Mat m(height, width, CV_8UC1);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x)
      m.at<uint8_t>(y, x) = static_cast<uint8_t>((7 * y + 3 * x) % 256);
  }
  return m;
}

ImageOptions grey(int64_t h, int64_t w) {
  ImageOptions o;
  o.height = h;
  o.width = w;
  return o;
}

template <typename Fn>
void expect_bad_image(Fn&& fn, const std::string& path, const std::string& part) {
  try {
    fn();
    FAIL() << "expected a DataError for " << path;
  } catch (const DataError& e) {
    EXPECT_EQ(e.file(), path);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(ImageTest, ValidatesOptions) {
  EXPECT_NO_THROW(validate(ImageOptions{}));
  ImageOptions o;
  o.width = 0;
  EXPECT_THROW(validate(o), Error);
  o = ImageOptions{};
  o.channels = 2;
  EXPECT_THROW(validate(o), Error);
  o = ImageOptions{};
  o.channels = 3;
  o.mean = {0.1, 0.2};
  EXPECT_THROW(validate(o), Error);
  o.mean = {0.1, 0.2, 0.3};
  EXPECT_NO_THROW(validate(o));
  o.std = {0.0};
  EXPECT_THROW(validate(o), Error);
  AugmentOptions a;
  a.hflip = 1.5;
  EXPECT_THROW(validate(a), Error);
}

TEST(ImageTest, LoadsGreyAndColourToTargetSize) {
  TempDir dir;
  const std::string grey_png = write_image(dir, "g.png", gradient(40, 30));
  DecodedImage g = load_image(grey_png, grey(20, 15));  // shrinking
  EXPECT_EQ(g.height, 20);
  EXPECT_EQ(g.width, 15);
  EXPECT_EQ(g.channels, 1);
  EXPECT_EQ(g.pixels.size(), 20u * 15u);
  g = load_image(grey_png, grey(40, 30));  // same size: exact pixels
  EXPECT_EQ(g.pixels[5 * 30 + 4], (7 * 5 + 3 * 4) % 256);
  g = load_image(grey_png, grey(50, 60));  // enlarging
  EXPECT_EQ(g.pixels.size(), 50u * 60u);

  // Colour: pure red in BGR storage comes back as RGB (255, 0, 0).
  const cv::Mat red(8, 12, CV_8UC3, cv::Scalar(0, 0, 255));
  const std::string colour_png = write_image(dir, "c.png", red);
  ImageOptions rgb = grey(4, 6);
  rgb.channels = 3;
  const DecodedImage c = load_image(colour_png, rgb);
  EXPECT_EQ(c.channels, 3);
  ASSERT_EQ(c.pixels.size(), 4u * 6u * 3u);
  for (std::size_t i = 0; i < c.pixels.size(); i += 3) {
    EXPECT_EQ(c.pixels[i], 255);
    EXPECT_EQ(c.pixels[i + 1], 0);
    EXPECT_EQ(c.pixels[i + 2], 0);
  }
  // Colour file read as grey, grey file read as colour.
  EXPECT_EQ(load_image(colour_png, grey(4, 6)).channels, 1);
  EXPECT_EQ(load_image(grey_png, rgb).pixels.size(), 4u * 6u * 3u);
  // JPEG goes through the same path.
  const std::string jpg = write_image(dir, "c.jpg", red);
  EXPECT_EQ(load_image(jpg, rgb).pixels.size(), 4u * 6u * 3u);
}

TEST(ImageTest, NormalisesConstantImage) {
  DecodedImage image;
  image.height = 2;
  image.width = 3;
  image.channels = 3;
  for (int i = 0; i < 6; ++i) image.pixels.insert(image.pixels.end(), {255, 0, 51});
  ImageOptions o = grey(2, 3);
  o.channels = 3;
  o.mean = {0.5, 0.5, 0.1};
  o.std = {0.5, 0.25, 0.2};
  std::vector<float> out(3 * 2 * 3, 99.f);
  image_to_chw(image, o, nullptr, 0, out.data());
  for (int i = 0; i < 6; ++i) {
    EXPECT_NEAR(out[0 * 6 + i], 1.0, 1e-6);                // (1 - 0.5) / 0.5
    EXPECT_NEAR(out[1 * 6 + i], -2.0, 1e-6);               // (0 - 0.5) / 0.25
    EXPECT_NEAR(out[2 * 6 + i], (0.2 - 0.1) / 0.2, 1e-6);  // (51/255 - 0.1) / 0.2
  }
  // A single mean/std applies to every channel; a disabled augmentation changes nothing.
  ImageOptions single = o;
  single.mean = {0.5};
  single.std = {0.5};
  AugmentOptions off;
  off.hflip = 1.0;
  image_to_chw(image, single, &off, 1, out.data());
  EXPECT_NEAR(out[6], -1.0, 1e-6);
  EXPECT_NEAR(out[12], (0.2 - 0.5) / 0.5, 1e-6);
  // Size mismatch is an error.
  EXPECT_THROW(image_to_chw(image, grey(2, 3), nullptr, 0, out.data()), Error);
}

TEST(ImageTest, AugmentationIsDeterministic) {
  DecodedImage image;
  image.height = 10;
  image.width = 12;
  image.channels = 1;
  const cv::Mat g = gradient(10, 12);
  image.pixels.assign(g.data, g.data + 120);
  const ImageOptions o = grey(10, 12);
  AugmentOptions a;
  a.enabled = true;
  a.crop_padding = 2;
  a.hflip = 0.5;
  a.brightness = 0.2;
  a.contrast = 0.3;
  std::vector<float> first(120), second(120), other(120), plain(120);
  image_to_chw(image, o, &a, 42, first.data());
  image_to_chw(image, o, &a, 42, second.data());
  image_to_chw(image, o, &a, 43, other.data());
  image_to_chw(image, o, nullptr, 0, plain.data());
  EXPECT_EQ(first, second);
  EXPECT_NE(first, other);
  EXPECT_NE(first, plain);
  for (float v : first) {
    EXPECT_GE(v, -1.0f - 1e-6f);  // clamped to [0,1] before normalising
    EXPECT_LE(v, 1.0f + 1e-6f);
  }

  // hflip = 1 alone mirrors every row exactly.
  AugmentOptions flip;
  flip.enabled = true;
  flip.hflip = 1.0;
  std::vector<float> flipped(120);
  for (uint64_t seed : {1u, 2u, 3u}) {
    image_to_chw(image, o, &flip, seed, flipped.data());
    for (int y = 0; y < 10; ++y) {
      for (int x = 0; x < 12; ++x) EXPECT_FLOAT_EQ(flipped[y * 12 + x], plain[y * 12 + (11 - x)]);
    }
  }
  // Enabled with every strength at zero is the identity.
  AugmentOptions none;
  none.enabled = true;
  image_to_chw(image, o, &none, 5, flipped.data());
  for (int i = 0; i < 120; ++i) EXPECT_FLOAT_EQ(flipped[i], plain[i]);
}

TEST(ImageTest, BadImagesNameThePath) {
  TempDir dir;
  const ImageOptions o = grey(8, 8);
  const std::string missing = (dir.path() / "missing.png").string();
  expect_bad_image([&] { load_image(missing, o); }, missing, "not found");

  const std::string empty = dir.write("empty.png", "");
  expect_bad_image([&] { load_image(empty, o); }, empty, "empty");

  std::string noise(512, '\0');
  for (std::size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<char>((i * 131 + 17) % 251);
  const std::string random = dir.write("random.png", noise);
  expect_bad_image([&] { load_image(random, o); }, random, "cannot decode");

  const std::string good = write_image(dir, "good.png", gradient(64, 64));
  const std::string bytes = test::read_file(good);
  const std::string truncated = dir.write("truncated.png", bytes.substr(0, bytes.size() / 2));
  expect_bad_image([&] { load_image(truncated, o); }, truncated, "cannot decode");

  const std::string jpg = write_image(dir, "good.jpg", gradient(64, 64));
  const std::string jbytes = test::read_file(jpg);
  const std::string truncated_jpg = dir.write("truncated.jpg", jbytes.substr(0, jbytes.size() / 2));
  expect_bad_image([&] { load_image(truncated_jpg, o); }, truncated_jpg, "end-of-image");

  ImageOptions small = o;
  small.max_pixels = 100;
  expect_bad_image([&] { load_image(good, small); }, good, "max_pixels");
  expect_bad_image([&] { load_image(jpg, small); }, jpg, "64x64");
  const std::string bmp = write_image(dir, "good.bmp", gradient(64, 64));
  expect_bad_image([&] { load_image(bmp, small); }, bmp, "4096 pixels");
  const std::string pgm = write_image(dir, "good.pgm", gradient(64, 64));  // checked after decode
  expect_bad_image([&] { load_image(pgm, small); }, pgm, "max_pixels");

  expect_bad_image([&] { load_image(dir.str(), o); }, dir.str(), "directory");
}

TEST(ImageTest, DecodesFromMemoryAsFromAFile) {
  TempDir dir;
  ImageOptions colour = grey(12, 10);
  colour.channels = 3;
  cv::Mat bgr;
  cv::merge(std::vector<cv::Mat>{gradient(40, 30), gradient(40, 30) * 0.5, 255 - gradient(40, 30)}, bgr);
  for (const char* name : {"a.png", "a.jpg"}) {
    const std::string path = write_image(dir, name, bgr);
    const std::string file = test::read_file(path);
    const std::vector<uint8_t> bytes(file.begin(), file.end());
    for (const auto& o : {grey(12, 10), colour}) {
      const auto from_file = load_image(path, o);
      const auto from_memory = decode_image(bytes, o, "upload");
      EXPECT_EQ(from_memory.pixels, from_file.pixels) << name;
      EXPECT_EQ(from_memory.channels, o.channels);
    }
  }
  const ImageOptions o = grey(8, 8);
  expect_bad_image([&] { decode_image({}, o, "upload"); }, "upload", "empty");
  expect_bad_image([&] { decode_image({1, 2, 3, 4, 5}, o, "upload"); }, "upload", "cannot decode");
  const std::string png = test::read_file(write_image(dir, "big.png", gradient(64, 64)));
  ImageOptions small = o;
  small.max_pixels = 100;
  expect_bad_image([&] { decode_image(std::vector<uint8_t>(png.begin(), png.end()), small, "upload"); }, "upload",
                   "max_pixels");
  const std::string half = png.substr(0, png.size() / 2);
  expect_bad_image([&] { decode_image(std::vector<uint8_t>(half.begin(), half.end()), o, "upload"); }, "upload",
                   "cannot decode");
}

}  // namespace
}  // namespace mmintent
