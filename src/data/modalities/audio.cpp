#include "data/modalities/builtin.h"

#include "mmintent/core/seed.h"
#include "mmintent/data/dataset.h"
#include "mmintent/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <thread>

namespace mmintent::detail {

AudioReader::AudioReader(const ReaderContext& context)
    : manifest_(context.manifest),
      audio_(context.options.audio),
      threads_(context.options.threads),
      extractor_(std::make_shared<LogMelExtractor>(context.options.audio)) {}

std::vector<std::string> AudioReader::prepare(const std::vector<std::string>& values,
                                              const std::vector<long>& lines) {
  paths_ = values;
  lines_ = lines;
  const auto n = static_cast<int64_t>(values.size());
  std::vector<std::string> errors(n);
  // Every clip is decoded once up front, in parallel: kept (the cache) or only checked, so a
  // bad file is an error or a skip before training, never a failure mid-epoch.
  if (!given_.empty() && static_cast<int64_t>(given_.size()) != n) {
    throw Error("AudioReader: " + std::to_string(given_.size()) + " decoded clips for " + std::to_string(n) + " records");
  }
  for (int64_t i = 0; i < static_cast<int64_t>(given_.size()); ++i) {
    if (given_[i] && given_[i]->sample_rate != audio_.sample_rate) {
      errors[i] = "the decoded audio is at " + std::to_string(given_[i]->sample_rate) + " Hz, the model takes " +
                  std::to_string(audio_.sample_rate) + " Hz";
    } else if (given_[i] && given_[i]->samples.empty()) {
      errors[i] = "the audio holds no samples";
    }
  }
  if (audio_.cache) clips_.assign(n, {});
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      if (paths_[i].empty() || (!given_.empty() && given_[i])) continue;
      try {
        DecodedAudio clip = decode_audio_file(paths_[i], audio_);
        if (clip.samples.empty()) {
          errors[i] = paths_[i] + ": the audio file holds no samples";
          continue;
        }
        if (audio_.cache) {
          auto& out = clips_[i];
          out.resize(clip.samples.size());
          for (size_t k = 0; k < out.size(); ++k) {
            out[k] = static_cast<int16_t>(std::lround(std::clamp(clip.samples[k], -1.0f, 1.0f) * 32767.0f));
          }
        }
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

void AudioReader::retain(const std::vector<char>& keep) {
  retain_where(paths_, keep);
  retain_where(lines_, keep);
  if (!clips_.empty()) retain_where(clips_, keep);
  if (!given_.empty()) retain_where(given_, keep);
}

std::vector<float> AudioReader::features(int64_t i, const AugmentOptions* augment, uint64_t seed) const {
  std::vector<float> samples;
  if (!given_.empty() && given_.at(i)) {
    samples = given_[i]->samples;
  } else if (!clips_.empty()) {
    const auto& clip = clips_.at(i);
    samples.resize(clip.size());
    for (size_t k = 0; k < clip.size(); ++k) samples[k] = float(clip[k]) * (1.0f / 32767.0f);
  } else {
    try {
      samples = decode_audio_file(paths_.at(i), audio_).samples;
    } catch (const std::exception& e) {  // name the manifest line, as the cached path does
      throw DataError(manifest_, lines_.at(i), e.what());
    }
  }
  auto f = extractor_->compute(samples.data(), static_cast<int64_t>(samples.size()));
  const int64_t frames = static_cast<int64_t>(f.size()) / extractor_->n_mels();
  if (audio_.normalize == "utterance") normalize_utterance(f.data(), frames, extractor_->n_mels());
  if (augment) spec_augment(f.data(), frames, extractor_->n_mels(), augment->spec_augment, seed);
  return f;
}

ModalityInput AudioReader::collate(const std::vector<int64_t>& indices,
                                   const AugmentOptions* augment, uint64_t seed) const {
  const auto B = static_cast<int64_t>(indices.size());
  const int64_t M = extractor_->n_mels();
  std::vector<std::vector<float>> feats(static_cast<size_t>(B));
  int64_t longest = 1;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t i = indices[b];
    if (!present(i)) continue;
    feats[b] = features(i, augment, mix_seed(seed, 1, static_cast<uint64_t>(i)));
    longest = std::max<int64_t>(longest, static_cast<int64_t>(feats[b].size()) / M);
  }
  ModalityInput in;
  // Serial and without at::zeros, as the image reader's (a parallel region in the loader's
  // worker would compete with the training step for the cores).
  in.data = at::empty({B, longest, M}, at::kFloat);
  in.lengths = at::empty({B}, at::kLong);
  in.mask = at::empty({B}, at::kFloat);
  auto* data = in.data.data_ptr<float>();
  auto* lengths = in.lengths.data_ptr<int64_t>();
  auto* mask = in.mask.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& f = feats[b];
    const auto frames = static_cast<int64_t>(f.size()) / M;
    float* row = data + b * longest * M;
    std::copy(f.begin(), f.end(), row);
    std::fill(row + frames * M, row + longest * M, 0.f);
    lengths[b] = frames;
    mask[b] = frames > 0 ? 1.f : 0.f;
  }
  return in;
}

}  // namespace mmintent::detail
