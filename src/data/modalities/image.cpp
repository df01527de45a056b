#include "data/modalities/builtin.h"

#include "mmintent/core/seed.h"
#include "mmintent/data/dataset.h"
#include "mmintent/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>

namespace mmintent::detail {

ImageReader::ImageReader(const ReaderContext& context)
    : manifest_(context.manifest),
      image_(context.options.image),
      cache_(context.options.cache_images),
      check_(context.options.check_images),
      threads_(context.options.threads) {
  validate(image_);
}

std::vector<std::string> ImageReader::prepare(const std::vector<std::string>& values,
                                              const std::vector<long>& lines) {
  paths_ = values;
  lines_ = lines;
  const auto n = static_cast<int64_t>(values.size());
  std::vector<std::string> errors(n);
  if (!given_.empty() && static_cast<int64_t>(given_.size()) != n) {
    throw Error("ImageReader: " + std::to_string(given_.size()) + " decoded images for " +
                std::to_string(n) + " records");
  }
  for (int64_t i = 0; i < static_cast<int64_t>(given_.size()); ++i) {
    const auto& g = given_[i];
    if (g && (g->height != image_.height || g->width != image_.width || g->channels != image_.channels)) {
      errors[i] = "the decoded image is " + std::to_string(g->width) + "x" + std::to_string(g->height) +
                  "x" + std::to_string(g->channels) + ", the model takes " + std::to_string(image_.width) +
                  "x" + std::to_string(image_.height) + "x" + std::to_string(image_.channels);
    }
  }
  if (!cache_ && !check_) return errors;
  // Decode the cache (or, with check_images, every image once without keeping it) in
  // parallel.
  if (cache_) images_.resize(n);
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      if (paths_[i].empty() || (!given_.empty() && given_[i])) continue;
      try {
        DecodedImage image = load_image(paths_[i], image_);
        if (cache_) images_[i] = std::move(image);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
  };
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(threads_, n));
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return errors;
}

void ImageReader::retain(const std::vector<char>& keep) {
  retain_where(paths_, keep);
  retain_where(lines_, keep);
  if (cache_) retain_where(images_, keep);
  if (!given_.empty()) retain_where(given_, keep);
}

void ImageReader::write_image(int64_t i, const AugmentOptions* augment, uint64_t seed,
                              float* out) const {
  if (!given_.empty() && given_.at(i)) {
    image_to_chw(*given_[i], image_, augment, seed, out);
    return;
  }
  if (!images_.empty()) {
    image_to_chw(images_.at(i), image_, augment, seed, out);
    return;
  }
  try {
    image_to_chw(load_image(paths_.at(i), image_), image_, augment, seed, out);
  } catch (const std::exception& e) {  // name the manifest line, as the cached path does
    throw DataError(manifest_, lines_.at(i), e.what());
  }
}

ModalityInput ImageReader::collate(const std::vector<int64_t>& indices,
                                   const AugmentOptions* augment, uint64_t seed) const {
  const auto B = static_cast<int64_t>(indices.size());
  const auto& o = image_;
  ModalityInput in;
  // empty, not zeros: a batch's images are above ATen's parallel grain, and zeros() would run
  // an OpenMP parallel region in the loader's worker thread, whose own thread team then
  // competes with the training step's for the cores (measured: the demo trained 1.5x slower).
  // Collation stays serial; every value is written below.
  in.data = at::empty({B, o.channels, o.height, o.width}, at::kFloat);
  in.mask = at::empty({B}, at::kFloat);
  auto* img = in.data.data_ptr<float>();
  auto* mask = in.mask.data_ptr<float>();
  const int64_t stride = o.channels * o.height * o.width;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t i = indices[b];
    mask[b] = present(i) ? 1.f : 0.f;
    if (present(i)) {
      write_image(i, augment, mix_seed(seed, 0, static_cast<uint64_t>(i)), img + b * stride);
    } else {
      std::fill(img + b * stride, img + (b + 1) * stride, 0.f);
    }
  }
  return in;
}

}  // namespace mmintent::detail
