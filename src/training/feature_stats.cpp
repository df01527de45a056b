#include "mmintent/training/feature_stats.h"

#include "mmintent/models/audio_encoder.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace mmintent {

FeatureStats sequence_feature_stats(BatchSource& source, const std::string& modality) {
  std::vector<double> sum, sum_sq;
  FeatureStats out;
  source.start_epoch(0);
  while (auto batch = source.next()) {
    const ModalityInput* in = batch->find(modality);
    if (!in || batch->size() == 0) continue;
    if (in->data.dim() != 3 || !in->lengths.defined()) {
      throw std::invalid_argument("feature statistics: '" + modality + "' is not a sequence of feature vectors");
    }
    const auto data = in->data.to(torch::kCPU, torch::kDouble).contiguous();
    const auto lengths = in->lengths.to(torch::kCPU, torch::kLong).contiguous();
    const int64_t B = data.size(0), T = data.size(1), D = data.size(2);
    if (sum.empty()) sum.assign(D, 0.0), sum_sq.assign(D, 0.0);
    if (static_cast<int64_t>(sum.size()) != D) {
      throw std::invalid_argument("feature statistics: '" + modality + "' changes its feature size");
    }
    const double* x = data.data_ptr<double>();
    const int64_t* len = lengths.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = std::min(len[b], T);
      if (n <= 0) continue;
      ++out.samples;
      out.frames += n;
      for (int64_t t = 0; t < n; ++t) {
        const double* row = x + (b * T + t) * D;
        for (int64_t d = 0; d < D; ++d) {
          sum[d] += row[d];
          sum_sq[d] += row[d] * row[d];
        }
      }
    }
  }
  if (out.frames == 0) {
    throw std::invalid_argument("feature statistics: no sample of the split carries '" + modality + "'");
  }
  const auto D = static_cast<int64_t>(sum.size());
  out.mean = torch::empty({D}, torch::kFloat);
  out.std = torch::empty({D}, torch::kFloat);
  for (int64_t d = 0; d < D; ++d) {
    const double mean = sum[d] / double(out.frames);
    const double var = std::max(0.0, sum_sq[d] / double(out.frames) - mean * mean);
    out.mean[d] = mean;
    out.std[d] = std::sqrt(var);
  }
  return out;
}

std::optional<FeatureStats> fit_feature_stats(IntentClassifier& model, BatchSource& source) {
  auto audio = std::dynamic_pointer_cast<AudioEncoderImpl>(model->encoder("audio"));
  if (!audio || !audio->options.global_norm()) return std::nullopt;
  auto stats = sequence_feature_stats(source, "audio");
  audio->set_feature_stats(stats.mean, stats.std);
  return stats;
}

}  // namespace mmintent
