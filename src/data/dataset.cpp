#include "mmintent/data/dataset.h"

#include "mmintent/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <thread>

namespace mmintent {

MultimodalDataset::MultimodalDataset(Manifest manifest, const LabelMap* labels,
                                     std::shared_ptr<const Tokenizer> tokenizer,
                                     DatasetOptions options)
    : path_(manifest.path), skipped_(manifest.skipped), options_(std::move(options)) {
  if (options_.use_text && !tokenizer) throw Error("MultimodalDataset: text is used but no tokenizer was given");
  validate(options_.image);

  // Labels first: unknown ones are an error or are skipped, before any expensive work.
  std::vector<Record> kept;
  kept.reserve(manifest.records.size());
  if (labels) num_classes_ = labels->size();
  for (auto& r : manifest.records) {
    if (labels) {
      // The hard label (or a soft label's most probable intent), every intent of a soft label
      // and a rejected intent must be in the label map.
      std::string unknown, what = "label";
      int64_t idx = -1;
      std::vector<std::pair<int64_t, float>> soft;
      for (const auto& [name, p] : r.soft_label) {
        const int64_t k = labels->find(name);
        if (k < 0) {
          unknown = name;
          what = "soft label intent";
          break;
        }
        soft.emplace_back(k, static_cast<float>(p));
      }
      if (unknown.empty() && !(r.label.empty() && !r.rejected.empty())) {
        idx = labels->find(r.label);
        if (idx < 0 && !options_.extra_label.empty() && r.label == options_.extra_label &&
            r.soft_label.empty()) {
          idx = labels->size();
        }
        if (idx < 0) unknown = r.label;
      }
      int64_t rejected = -1;
      if (unknown.empty() && !r.rejected.empty()) {
        rejected = labels->find(r.rejected);
        if (rejected < 0) {
          unknown = r.rejected;
          what = "rejected intent";
        }
      }
      if (!unknown.empty() || (idx < 0 && rejected < 0)) {
        const std::string msg = what + " '" + unknown +
                                "' is not in the label map (built from the training split or "
                                "data.labels)";
        if (options_.unknown_labels == "skip") {
          skipped_.push_back(path_ + ":" + std::to_string(r.line) + ": " + msg);
          continue;
        }
        throw DataError(path_, r.line,
                        msg + "; set data.unknown_labels: skip to leave such samples out");
      }
      labels_.push_back(idx);
      soft_.push_back(std::move(soft));
      rejected_.push_back(rejected);
    }
    if (!options_.use_image) r.image.clear();
    if (!options_.use_text) r.text.clear();
    kept.push_back(std::move(r));
  }
  records_ = std::move(kept);

  // Decode the image cache (or, with check_images, every image once without keeping it) in
  // parallel; bad images are errors or skips.
  const bool cache = options_.cache_images;
  if (options_.use_image && (cache || options_.check_images)) {
    const int64_t n = size();
    if (cache) images_.resize(n);
    std::vector<std::string> errors(n);
    std::atomic<int64_t> next{0};
    auto work = [&] {
      for (int64_t i = next++; i < n; i = next++) {
        if (records_[i].image.empty()) continue;
        try {
          DecodedImage image = load_image(records_[i].image, options_.image);
          if (cache) images_[i] = std::move(image);
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      }
    };
    const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(options_.threads, n));
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();

    std::vector<char> keep(n, 1);
    for (int64_t i = 0; i < n; ++i) {
      if (errors[i].empty()) continue;
      const std::string msg = path_ + ":" + std::to_string(records_[i].line) + ": " + errors[i];
      if (options_.on_bad_sample != "skip") throw DataError(path_, records_[i].line, errors[i]);
      skipped_.push_back(msg);
      keep[i] = 0;
    }
    if (std::find(keep.begin(), keep.end(), 0) != keep.end()) {
      int64_t w = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (!keep[i]) continue;
        if (w != i) {  // a self-move would empty the strings
          records_[w] = std::move(records_[i]);
          if (cache) images_[w] = std::move(images_[i]);
          if (!labels_.empty()) {
            labels_[w] = labels_[i];
            soft_[w] = std::move(soft_[i]);
            rejected_[w] = rejected_[i];
          }
        }
        ++w;
      }
      records_.resize(w);
      if (cache) images_.resize(w);
      if (!labels_.empty()) {
        labels_.resize(w);
        soft_.resize(w);
        rejected_.resize(w);
      }
    }
  }

  // Tokenise once.
  ids_.resize(records_.size());
  if (options_.use_text) {
    for (size_t i = 0; i < records_.size(); ++i) {
      if (records_[i].text.empty()) continue;
      auto ids = tokenizer->encode(records_[i].text);
      if (static_cast<int64_t>(ids.size()) > options_.max_length) ids.resize(options_.max_length);
      ids_[i] = std::move(ids);
    }
  }
}

std::vector<int64_t> MultimodalDataset::label_counts(int64_t num_classes) const {
  std::vector<int64_t> counts(num_classes, 0);
  for (auto l : labels_) {
    if (l >= 0 && l < num_classes) ++counts[l];
  }
  return counts;
}

void MultimodalDataset::write_image(int64_t i, const AugmentOptions* augment, uint64_t seed,
                                    float* out) const {
  if (!images_.empty()) {
    image_to_chw(images_.at(i), options_.image, augment, seed, out);
    return;
  }
  const auto& r = records_.at(i);
  try {
    image_to_chw(load_image(r.image, options_.image), options_.image, augment, seed, out);
  } catch (const std::exception& e) {  // name the manifest line, as the cached path does
    throw DataError(path_, r.line, e.what());
  }
}

Batch MultimodalDataset::collate(const std::vector<int64_t>& indices, const AugmentOptions* augment,
                                 uint64_t seed) const {
  const auto B = static_cast<int64_t>(indices.size());
  Batch batch;
  batch.indices = at::empty({B}, at::kLong);
  auto* idx = batch.indices.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) idx[b] = indices[b];

  if (options_.use_text) {
    int64_t T = 1;
    for (auto i : indices) T = std::max<int64_t>(T, static_cast<int64_t>(ids_.at(i).size()));
    batch.token_ids = at::zeros({B, T}, at::kLong);
    batch.lengths = at::empty({B}, at::kLong);
    batch.text_mask = at::empty({B}, at::kFloat);
    auto* tok = batch.token_ids.data_ptr<int64_t>();
    auto* len = batch.lengths.data_ptr<int64_t>();
    auto* mask = batch.text_mask.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      const auto& ids = ids_[indices[b]];
      std::copy(ids.begin(), ids.end(), tok + b * T);
      len[b] = static_cast<int64_t>(ids.size());
      mask[b] = ids.empty() ? 0.f : 1.f;
    }
  }
  if (options_.use_image) {
    const auto& o = options_.image;
    // empty, not zeros: a batch's images are above ATen's parallel grain, and zeros() would run
    // an OpenMP parallel region in the loader's worker thread, whose own thread team then
    // competes with the training step's for the cores (measured: the demo trained 1.5x slower).
    // Collation stays serial; every value is written below.
    batch.images = at::empty({B, o.channels, o.height, o.width}, at::kFloat);
    batch.image_mask = at::empty({B}, at::kFloat);
    auto* img = batch.images.data_ptr<float>();
    auto* mask = batch.image_mask.data_ptr<float>();
    const int64_t stride = o.channels * o.height * o.width;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t i = indices[b];
      mask[b] = has_image(i) ? 1.f : 0.f;
      if (has_image(i)) {
        write_image(i, augment, mix_seed(seed, 0, static_cast<uint64_t>(i)), img + b * stride);
      } else {
        std::fill(img + b * stride, img + (b + 1) * stride, 0.f);
      }
    }
  }
  if (has_labels()) {
    batch.labels = at::empty({B}, at::kLong);
    auto* lab = batch.labels.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) lab[b] = labels_[indices[b]];
    bool any_soft = false, any_rejected = false;
    for (auto i : indices) {
      any_soft = any_soft || !soft_[i].empty();
      any_rejected = any_rejected || rejected_[i] >= 0;
    }
    if (any_soft) {
      batch.soft_targets = at::zeros({B, num_classes_}, at::kFloat);
      auto* q = batch.soft_targets.data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) {
        for (const auto& [k, p] : soft_[indices[b]]) q[b * num_classes_ + k] = p;
      }
    }
    if (any_rejected) {
      batch.rejected = at::empty({B}, at::kLong);
      auto* rej = batch.rejected.data_ptr<int64_t>();
      for (int64_t b = 0; b < B; ++b) rej[b] = rejected_[indices[b]];
    }
  }
  return batch;
}

}  // namespace mmintent
