// The audio loader against the training step it feeds, side by side in one program (issue 17's
// target: utterances per second through decoding-from-cache, log-mel features, normalisation and
// SpecAugment with 1 loader worker >= 3x what the spoken_snips training step consumes).
//   mmintent_bench_audio [--smoke] [--manifest FILE]
// Without --manifest: 256 generated clips of 1.5-4.5 s (speech-like lengths: SNIPS's spoken
// utterances are about 2-4 s), tones and noise; features cost by length, not by content.
// Prints the median of 5 passes (loader alone; 1 worker, as configs/spoken_snips.yaml) and of 20
// training steps (batch 32, configs/spoken_snips.yaml's model), and the ratio.
#include "fixture.h"

#include "mmintent/data/audio.h"
#include "mmintent/data/loader.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <iostream>

using namespace mmintent;
using namespace mmintent::bench;

namespace {

std::string write_clips(const fs::path& dir, int n) {
  fs::create_directories(dir / "wav");
  std::mt19937_64 rng(3);
  std::ofstream out(dir / "train.jsonl");
  for (int i = 0; i < n; ++i) {
    DecodedAudio clip;
    clip.sample_rate = 16000;
    const auto samples = static_cast<size_t>(16000 * (1.5 + 3.0 * double(rng() % 1000) / 1000.0));
    clip.samples.resize(samples);
    std::normal_distribution<float> noise(0.f, 0.05f);
    const double hz = 200 + double(rng() % 2000);
    for (size_t k = 0; k < samples; ++k) clip.samples[k] = 0.5f * float(std::sin(2 * 3.14159265 * hz * double(k) / 16000)) + noise(rng);
    const std::string name = "wav/" + std::to_string(i) + ".wav";
    write_wav_file((dir / name).string(), clip);
    out << "{\"audio\": \"" << name << "\", \"label\": \"intent_" << (i % 7) << "\"}\n";
  }
  return (dir / "train.jsonl").string();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  std::string manifest;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) smoke = true;
    else if (std::strcmp(argv[i], "--manifest") == 0 && i + 1 < argc) manifest = argv[++i];
    else {
      std::cerr << "usage: mmintent_bench_audio [--smoke] [--manifest FILE]\n";
      return 2;
    }
  }
  ScratchFolder scratch;
  if (manifest.empty()) manifest = write_clips(scratch.path(), smoke ? 16 : 256);
  Config c = repo_config("spoken_snips", manifest, {"runtime.threads=0"});
  if (smoke) c.model.audio_encoder.hidden_size(16).channels(4);
  configure_runtime(c);
  const auto m = read_manifest(manifest, manifest_read_options(c, true));
  std::vector<std::string> labels;
  for (const auto& r : m.records) labels.push_back(r.label);
  RunData data;
  data.labels = LabelMap::from_labels(labels);
  const auto t_prepare = std::chrono::steady_clock::now();
  data.train = std::make_shared<MultimodalDataset>(m, &data.labels, nullptr, dataset_options(c));
  const double prepare_s = seconds_since(t_prepare);
  const int64_t n = data.train->size();

  // The loader alone: 1 worker, the training split's augmentation (SpecAugment).
  std::vector<double> passes;
  auto loader = make_loader(c, data.train, /*training=*/true);
  for (int p = 0; p < (smoke ? 1 : 5); ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    loader->start_epoch(p);
    while (loader->next()) {
    }
    passes.push_back(double(n) / seconds_since(t0));
  }
  loader.reset();

  // The training step on the loader's batches (collated up front, so nothing else runs).
  Step step(c, 2, data.labels.size());
  std::vector<Batch> batches;
  {
    auto l = make_loader(c, data.train, true);
    l->start_epoch(0);
    while (auto b = l->next()) batches.push_back(std::move(*b));
  }
  step(batches[0]);  // warm-up
  std::vector<double> steps;
  for (int i = 0; i < (smoke ? 2 : 20); ++i) {
    const auto& b = batches[static_cast<size_t>(i) % batches.size()];
    const auto t0 = std::chrono::steady_clock::now();
    step(b);
    steps.push_back(double(b.size()) / seconds_since(t0));
  }
  const double loader_rate = median(passes), step_rate = median(steps);
  std::printf("clips: %lld, decoded and cached in %.2f s (%.0f clips/s over %lld threads)\n",
              static_cast<long long>(n), prepare_s, double(n) / prepare_s,
              static_cast<long long>(std::max<int64_t>(1, c.data.loader.num_workers)));
  std::printf("loader, 1 worker (features + SpecAugment + collation): %.0f utterances/s (median of %zu passes)\n",
              loader_rate, passes.size());
  std::printf("training step (spoken_snips model, batch %lld, %d threads): %.0f utterances/s (median of %zu steps)\n",
              static_cast<long long>(c.data.loader.batch_size), torch::get_num_threads(), step_rate, steps.size());
  std::printf("ratio loader / step: %.1fx (target >= 3x)%s\n", loader_rate / step_rate,
              smoke ? " [smoke: a tiny model, not a figure]" : "");
  return 0;
}
