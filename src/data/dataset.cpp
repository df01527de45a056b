#include "mmintent/data/dataset.h"

#include "data/modalities/builtin.h"
#include "mmintent/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <exception>

namespace mmintent {

bool DatasetOptions::uses(const std::string& modality) const {
  return std::find(modalities.begin(), modalities.end(), modality) != modalities.end();
}

MultimodalDataset::MultimodalDataset(Manifest manifest, const LabelMap* labels,
                                     std::shared_ptr<const Tokenizer> tokenizer,
                                     DatasetOptions options)
    : path_(manifest.path), skipped_(manifest.skipped), options_(std::move(options)) {
  static const ModalitySettings kNoSettings;
  for (const auto& name : canonical_order(options_.modalities)) {
    const auto it = options_.plugins.find(name);
    ModalitySettings settings = it == options_.plugins.end() ? kNoSettings : it->second;
    settings.modality = name;
    ReaderContext context{path_, options_, tokenizer, settings};
    readers_.emplace_back(name, make_modality_reader(name, context));
  }

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
      int64_t shown = -1;
      if (unknown.empty() && !r.shown.empty()) {
        shown = labels->find(r.shown);
        if (shown < 0) {
          unknown = r.shown;
          what = "shown intent";
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
      shown_.push_back(shown);
      propensity_.push_back(shown >= 0 ? static_cast<float>(r.propensity) : 0.0f);
    }
    if (!options_.uses("image")) {
      r.image.clear();
      r.image_pixels.reset();
    }
    if (!options_.uses("text")) r.text.clear();
    if (!options_.uses("audio")) r.audio_samples.reset();
    for (auto it = r.inputs.begin(); it != r.inputs.end();) {
      it = options_.uses(it->first) ? std::next(it) : r.inputs.erase(it);
    }
    kept.push_back(std::move(r));
  }
  records_ = std::move(kept);

  // Each reader prepares its values once (tokenises, decodes, parses); a value it cannot use
  // makes its record an error or a skip.
  const auto n = static_cast<int64_t>(records_.size());
  std::vector<long> lines(n);
  for (int64_t i = 0; i < n; ++i) lines[i] = records_[i].line;
  std::vector<std::string> errors(n);
  for (auto& [name, reader] : readers_) {
    if (name == "image") {  // images decoded in memory go to the built-in reader directly
      std::vector<std::shared_ptr<const DecodedImage>> decoded(n);
      bool any = false;
      for (int64_t i = 0; i < n; ++i) any |= static_cast<bool>(decoded[i] = records_[i].image_pixels);
      if (any) static_cast<detail::ImageReader&>(*reader).set_decoded(std::move(decoded));
    }
    if (name == "audio") {  // clips decoded in memory likewise
      std::vector<std::shared_ptr<const DecodedAudio>> decoded(n);
      bool any = false;
      for (int64_t i = 0; i < n; ++i) any |= static_cast<bool>(decoded[i] = records_[i].audio_samples);
      if (any) static_cast<detail::AudioReader&>(*reader).set_decoded(std::move(decoded));
    }
    std::vector<std::string> values(n);
    for (int64_t i = 0; i < n; ++i) values[i] = record_value(records_[i], name);
    auto found = reader->prepare(values, lines);
    if (static_cast<int64_t>(found.size()) != n) {
      throw Error("the reader of modality '" + name + "' returned " + std::to_string(found.size()) +
                  " results for " + std::to_string(n) + " records");
    }
    for (int64_t i = 0; i < n; ++i) {
      if (errors[i].empty()) errors[i] = std::move(found[i]);
    }
  }
  std::vector<char> keep(n, 1);
  for (int64_t i = 0; i < n; ++i) {
    if (errors[i].empty()) continue;
    if (options_.on_bad_sample != "skip") throw DataError(path_, records_[i].line, errors[i]);
    skipped_.push_back(path_ + ":" + std::to_string(records_[i].line) + ": " + errors[i]);
    keep[i] = 0;
  }
  if (std::find(keep.begin(), keep.end(), 0) != keep.end()) {
    retain_where(records_, keep);
    if (!labels_.empty()) {
      retain_where(labels_, keep);
      retain_where(soft_, keep);
      retain_where(rejected_, keep);
      retain_where(shown_, keep);
      retain_where(propensity_, keep);
    }
    for (auto& [name, reader] : readers_) reader->retain(keep);
  }
}

const std::vector<int64_t>& MultimodalDataset::token_ids(int64_t i) const {
  for (const auto& [name, reader] : readers_) {
    if (name == "text") return static_cast<const detail::TextReader&>(*reader).token_ids(i);
  }
  throw Error("MultimodalDataset::token_ids: the data set uses no text");
}

bool MultimodalDataset::has(const std::string& modality, int64_t i) const {
  for (const auto& [name, reader] : readers_) {
    if (name == modality) return reader->present(i);
  }
  return false;
}

std::vector<std::string> MultimodalDataset::modalities() const {
  std::vector<std::string> out;
  for (const auto& [name, reader] : readers_) out.push_back(name);
  return out;
}

std::vector<int64_t> MultimodalDataset::label_counts(int64_t num_classes) const {
  std::vector<int64_t> counts(num_classes, 0);
  for (auto l : labels_) {
    if (l >= 0 && l < num_classes) ++counts[l];
  }
  return counts;
}

Batch MultimodalDataset::collate(const std::vector<int64_t>& indices, const AugmentOptions* augment,
                                 uint64_t seed) const {
  const auto B = static_cast<int64_t>(indices.size());
  Batch batch;
  batch.indices = at::empty({B}, at::kLong);
  auto* idx = batch.indices.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) idx[b] = indices[b];

  for (const auto& [name, reader] : readers_) {
    batch.inputs[name] = reader->collate(indices, augment, seed);
  }
  if (has_labels()) {
    batch.labels = at::empty({B}, at::kLong);
    auto* lab = batch.labels.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) lab[b] = labels_[indices[b]];
    bool any_soft = false, any_rejected = false, any_shown = false;
    for (auto i : indices) {
      any_soft = any_soft || !soft_[i].empty();
      any_rejected = any_rejected || rejected_[i] >= 0;
      any_shown = any_shown || shown_[i] >= 0;
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
    if (any_shown) {
      batch.shown = at::empty({B}, at::kLong);
      batch.propensity = at::empty({B}, at::kFloat);
      auto* a = batch.shown.data_ptr<int64_t>();
      auto* p = batch.propensity.data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) {
        a[b] = shown_[indices[b]];
        p[b] = propensity_[indices[b]];
      }
    }
  }
  return batch;
}

}  // namespace mmintent
