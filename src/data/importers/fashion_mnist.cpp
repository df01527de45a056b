// Fashion-MNIST (Xiao et al., 2017): see import_fashion_mnist in mmintent/data/importers.h.

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "data/idx.h"
#include "data/importers/common.h"
#include "mmintent/data/importers.h"
#include "mmintent/error.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using namespace detail;  // the importers' shared helpers

constexpr int kSide = detail::kIdxImageSide;
constexpr std::size_t kPixels = detail::kIdxImagePixels;

/// The shared IDX reader, with its errors as DataError (file, what is wrong).
detail::IdxImages read_idx_pair(const fs::path& images_path, const fs::path& labels_path) {
  try {
    return detail::read_idx_images(images_path.string(), labels_path.string());
  } catch (const detail::IdxError& e) {
    throw DataError(e.file(), 0, e.reason());
  }
}

bool is_digits_png(const std::string& name) {
  if (name.size() <= 4 || name.compare(name.size() - 4, 4, ".png") != 0) return false;
  return std::all_of(name.begin(), name.end() - 4, [](char c) { return c >= '0' && c <= '9'; });
}

/// Writes the PNGs of one split into OUT_DIR/images/<split>/ and returns its records.
std::vector<OutRecord> write_images(const fs::path& out_dir, const char* split, const detail::IdxImages& set,
                                    const std::vector<std::size_t>& indices) {
  const fs::path image_dir = out_dir / "images" / split;
  std::error_code ec;
  fs::create_directories(image_dir, ec);
  if (ec) throw DataError(image_dir.string(), 0, "cannot create the folder: " + ec.message());
  for (const auto& entry : fs::directory_iterator(image_dir, ec)) {
    if (is_digits_png(entry.path().filename().string())) {
      std::error_code remove_ec;
      fs::remove(entry.path(), remove_ec);
      if (remove_ec) throw DataError(entry.path().string(), 0, "cannot remove an old image: " + remove_ec.message());
    }
  }
  if (ec) throw DataError(image_dir.string(), 0, "cannot list the folder: " + ec.message());
  int width = 5;
  while (indices.size() > 1 && static_cast<int>(std::to_string(indices.size() - 1).size()) > width) ++width;
  const auto& names = fashion_mnist_class_names();
  std::vector<OutRecord> records;
  records.reserve(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    std::string name = std::to_string(i);
    name = std::string(static_cast<std::size_t>(std::max(0, width - static_cast<int>(name.size()))), '0') + name + ".png";
    const fs::path png = image_dir / name;
    const cv::Mat image(kSide, kSide, CV_8UC1, const_cast<std::uint8_t*>(set.pixels.data() + indices[i] * kPixels));
    bool ok = false;
    try {
      ok = cv::imwrite(png.string(), image);
    } catch (const cv::Exception& e) {
      throw DataError(png.string(), 0, std::string("cannot write the PNG: ") + e.what());
    }
    if (!ok) throw DataError(png.string(), 0, "cannot write the PNG");
    records.push_back({"", std::string("images/") + split + "/" + name, names[set.labels[indices[i]]]});
  }
  return records;
}

}  // namespace

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"t-shirt_top", "trouser", "pullover", "dress", "coat",
                                                 "sandal",      "shirt",   "sneaker",  "bag",   "ankle_boot"};
  return names;
}

ImportSummary import_fashion_mnist(const std::string& src_dir, const std::string& out_dir,
                                   const FashionMnistImportOptions& options) {
  const fs::path src(src_dir);
  const detail::IdxImages train = read_idx_pair(src / "train-images-idx3-ubyte.gz", src / "train-labels-idx1-ubyte.gz");
  const detail::IdxImages test = read_idx_pair(src / "t10k-images-idx3-ubyte.gz", src / "t10k-labels-idx1-ubyte.gz");
  if (options.val_size >= train.count) {
    throw Error("Fashion-MNIST: --val-size " + std::to_string(options.val_size) +
                " leaves no training image (the training set has " + std::to_string(train.count) + ")");
  }
  const auto val_index = choose_sorted(train.count, options.val_size, options.seed, fnv1a("fashion-mnist/val"));
  std::vector<std::size_t> train_index, test_index(test.count);
  train_index.reserve(train.count - val_index.size());
  for (std::size_t i = 0, v = 0; i < train.count; ++i) {
    if (v < val_index.size() && val_index[v] == i) {
      ++v;
    } else {
      train_index.push_back(i);
    }
  }
  for (std::size_t i = 0; i < test.count; ++i) test_index[i] = i;

  // All input is good: from here on the output folder changes. Old manifests go first so that
  // none of them can point at a half-rewritten image folder if writing fails.
  const fs::path out(out_dir);
  std::error_code ec;
  for (const char* split : kSplitNames) {
    const fs::path manifest = out / (std::string(split) + ".jsonl");
    fs::remove(manifest, ec);
    if (ec) throw DataError(manifest.string(), 0, "cannot remove the old manifest: " + ec.message());
  }
  Splits splits;
  splits[0] = write_images(out, "train", train, train_index);
  splits[1] = write_images(out, "val", train, val_index);
  splits[2] = write_images(out, "test", test, test_index);

  ImportSummary summary;
  summary.dataset = "fashion-mnist";
  summary.kind = "class";
  write_manifests(out, splits, /*with_text=*/false, /*with_image=*/true, summary);
  count_splits(splits, [](const OutRecord& r) { return r.label; }, summary);
  summary.checks.push_back({"train images (train + val)", train.count, 60000});
  summary.checks.push_back({"test images", test.count, 10000});
  summary.checks.push_back({"classes", summary.num_labels, 10});
  summary.notes.push_back("val = " + std::to_string(options.val_size) +
                          " training images chosen at random (seed " + std::to_string(options.seed) +
                          "); test = the t10k images; PNGs under " + (out / "images").string());
  return summary;
}

}  // namespace mmintent
