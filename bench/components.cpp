// mmintent_bench_components: Google Benchmark measurements of the pieces a training step is
// made of, on the demo's shapes (configs/demo.yaml; the CLINC150 text encoder from
// configs/clinc150.yaml):
//   image decode + resize, image_to_chw with and without augmentation, tokenisation,
//   batch collation, the loader's batches per second (0, 1 and 2 worker threads), forward and
//   forward+backward of each encoder and of the whole model, one training step, and the
//   training loop fed by the loader (how long the step waits for batches).
//
//   mmintent_bench_components [--manifest=PATH] [--threads=N] [--smoke] [--benchmark_...]
//
// --manifest: measure on a real manifest (e.g. data/demo/train.jsonl); default: a generated
// demo-like data set of 1,024 samples. --threads: LibTorch intra-op threads (default 2, as the
// configs). --smoke: every benchmark runs a few iterations only (CI: checks they run, not how
// fast). Items per second: images, texts, batches or samples as each benchmark's label says,
// per second of wall-clock time (LibTorch's operators run on several threads).

#include "fixture.h"

#include "mmintent/data/image.h"
#include "mmintent/data/loader.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/device.h"
#include "mmintent/training/loss.h"
#include "mmintent/training/optimization.h"

#include <benchmark/benchmark.h>
#include <opencv2/core/utility.hpp>
#include <torch/torch.h>

#include <cstring>
#include <numeric>

namespace mmintent::bench {
namespace {

std::string g_manifest;
int g_threads = 2;
/// Untimed calls before each model benchmark: the first calls create oneDNN primitives,
/// OpenMP threads and allocator pools (this Google Benchmark, 1.7, has no warm-up option).
constexpr int kWarmUp = 2;

Fixture& fx() { return Fixture::get(g_manifest); }

std::vector<int64_t> first_indices(int64_t n, int64_t count) {
  std::vector<int64_t> idx(static_cast<size_t>(std::min(n, count)));
  std::iota(idx.begin(), idx.end(), 0);
  return idx;
}

// ---------------------------------------------------------------------------- data pieces

void BM_ImageDecodeResize_28px(benchmark::State& state) {
  auto& f = fx();
  const auto& opts = f.demo.data.image;
  const auto& r = f.data.train->record(0);
  for (auto _ : state) benchmark::DoNotOptimize(load_image(r.image, opts));
  state.SetItemsProcessed(state.iterations());
  state.SetLabel("images; a 28x28 PNG of the data set");
}
BENCHMARK(BM_ImageDecodeResize_28px)->UseRealTime();

void BM_ImageDecodeResize_640x480Jpeg(benchmark::State& state) {
  auto& f = fx();
  ImageOptions opts = f.demo.data.image;
  opts.channels = state.range(0);
  opts.mean = {0.5};
  opts.std = {0.5};
  for (auto _ : state) benchmark::DoNotOptimize(load_image(f.large_image, opts));
  state.SetItemsProcessed(state.iterations());
  state.SetLabel("images; 640x480 JPEG -> 28x28, channels = arg");
}
BENCHMARK(BM_ImageDecodeResize_640x480Jpeg)->Arg(1)->Arg(3)->UseRealTime();

void BM_ImageToChw(benchmark::State& state) {
  auto& f = fx();
  const auto& opts = f.demo.data.image;
  const DecodedImage image = load_image(f.data.train->record(0).image, opts);
  const AugmentOptions& augment = f.demo.data.augment;
  const AugmentOptions* a = state.range(0) ? &augment : nullptr;
  std::vector<float> out(static_cast<size_t>(opts.channels * opts.height * opts.width));
  uint64_t seed = 1;
  for (auto _ : state) {
    image_to_chw(image, opts, a, seed++, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(state.range(0) ? "images; demo augmentation (crop, flip, brightness, contrast)"
                                : "images; normalise only");
}
BENCHMARK(BM_ImageToChw)->Arg(0)->Arg(1)->UseRealTime();

void BM_Tokenise(benchmark::State& state) {
  auto& f = fx();
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    const auto& t = f.texts[i++ % f.texts.size()];
    bytes += t.size();
    benchmark::DoNotOptimize(f.tokenizer->encode(t));
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.SetLabel("texts");
}
BENCHMARK(BM_Tokenise)->UseRealTime();

void BM_Collate(benchmark::State& state) {
  auto& f = fx();
  const auto& d = *f.data.train;
  const auto idx = first_indices(d.size(), f.demo.data.loader.batch_size);
  const AugmentOptions& augment = f.demo.data.augment;
  uint64_t seed = 1;
  for (auto _ : state) benchmark::DoNotOptimize(d.collate(idx, state.range(0) ? &augment : nullptr, seed++));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(idx.size()));
  state.counters["batches_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel("samples; a demo batch (text + image), augmented = arg");
}
BENCHMARK(BM_Collate)->Arg(0)->Arg(1)->UseRealTime();

/// One pass of the training loader (shuffled, augmented) with `range(0)` worker threads,
/// consumed as fast as possible.
void BM_LoaderPass(benchmark::State& state) {
  auto& f = fx();
  Config c = f.demo;
  c.data.loader.num_workers = state.range(0);
  auto loader = make_loader(c, f.data.train, /*training=*/true);
  int64_t batches = 0, epoch = 0;
  for (auto _ : state) {
    loader->start_epoch(epoch++);
    while (auto b = loader->next()) {
      benchmark::DoNotOptimize(b->input("image").data.data_ptr());
      ++batches;
    }
  }
  state.SetItemsProcessed(batches * c.data.loader.batch_size);
  state.counters["batches_per_s"] = benchmark::Counter(static_cast<double>(batches), benchmark::Counter::kIsRate);
  state.SetLabel("samples; loader workers = arg");
}
BENCHMARK(BM_LoaderPass)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---------------------------------------------------------------------------- model pieces

/// A demo batch of `bs` samples (from the data set, no augmentation).
Batch demo_batch(int64_t bs) {
  auto& f = fx();
  return f.data.train->collate(first_indices(f.data.train->size(), bs), nullptr, 0);
}

/// Random token ids of CLINC150's shape: vocabulary 6000, lengths 4..20.
Batch clinc_text_batch(int64_t bs) {
  torch::manual_seed(1);
  Batch b;
  b.inputs["text"].lengths = torch::randint(4, 21, {bs}, torch::kLong);
  const int64_t T = b.input("text").lengths.max().item<int64_t>();
  b.inputs["text"].data = torch::randint(1, 6000, {bs, T}, torch::kLong);
  b.input("text").data.masked_fill_(torch::arange(T).unsqueeze(0) >= b.input("text").lengths.unsqueeze(1), 0);
  b.inputs["text"].mask = torch::ones({bs});
  b.labels = torch::randint(0, 151, {bs}, torch::kLong);
  return b;
}

TextEncoderOptions text_options(const std::string& which) {
  auto& f = fx();
  if (which == "demo") return f.demo.model_options(f.tokenizer->vocab_size(), f.data.labels.size()).text();
  return repo_config("clinc150", f.manifest).model_options(6001, 151).text();
}

/// `kernel`: text_encoder.rnn_kernel, "fused" (mmintent's, the default on the CPU) or "native"
/// (LibTorch's LSTM), side by side.
void BM_TextEncoder(benchmark::State& state, const std::string& which, bool backward,
                    const std::string& kernel) {
  torch::manual_seed(0);
  TextEncoder enc(text_options(which).rnn_kernel(kernel));
  const int64_t bs = 64;
  Batch b = which == "demo" ? demo_batch(bs) : clinc_text_batch(bs);
  enc->train(backward);
  auto run = [&] {
    if (backward) {
      enc->zero_grad();
      enc->forward(b.input("text").data, b.input("text").lengths).sum().backward();
    } else {
      torch::NoGradGuard no_grad;
      benchmark::DoNotOptimize(enc->forward(b.input("text").data, b.input("text").lengths));
    }
  };
  for (int i = 0; i < kWarmUp; ++i) run();
  for (auto _ : state) run();
  state.SetItemsProcessed(state.iterations() * bs);
  state.SetLabel("samples; batch 64, " + which + " text encoder, " + kernel + " RNN" +
                 (backward ? ", forward+backward" : ", forward"));
}
#define MMINTENT_TEXT_BENCH(name, which, backward, kernel)                          \
  BENCHMARK_CAPTURE(BM_TextEncoder, name, std::string(which), backward, std::string(kernel)) \
      ->Unit(benchmark::kMillisecond)                                               \
      ->UseRealTime()
MMINTENT_TEXT_BENCH(demo_forward_native, "demo", false, "native");
MMINTENT_TEXT_BENCH(demo_forward_fused, "demo", false, "fused");
MMINTENT_TEXT_BENCH(demo_forward_backward_native, "demo", true, "native");
MMINTENT_TEXT_BENCH(demo_forward_backward_fused, "demo", true, "fused");
MMINTENT_TEXT_BENCH(clinc150_forward_native, "clinc150", false, "native");
MMINTENT_TEXT_BENCH(clinc150_forward_fused, "clinc150", false, "fused");
MMINTENT_TEXT_BENCH(clinc150_forward_backward_native, "clinc150", true, "native");
MMINTENT_TEXT_BENCH(clinc150_forward_backward_fused, "clinc150", true, "fused");

/// `channels_last` and `kernel` (image_encoder.norm_kernel) side by side: NCHW with LibTorch's
/// batch norm, ReLU and pooling; channels-last with them; channels-last with mmintent's fused
/// kernel (the default on the CPU). The forward pass alone runs in evaluation mode (LibTorch's
/// kernels, running statistics), as a prediction does.
void BM_ImageEncoder(benchmark::State& state, bool backward, bool channels_last,
                     const std::string& kernel) {
  auto& f = fx();
  torch::manual_seed(0);
  ImageEncoder enc(f.demo.model_options(f.tokenizer->vocab_size(), f.data.labels.size())
                       .image()
                       .channels_last(channels_last)
                       .norm_kernel(kernel));
  const int64_t bs = 64;
  Batch b = demo_batch(bs);
  enc->train(backward);
  auto run = [&] {
    if (backward) {
      enc->zero_grad();
      enc->forward(b.input("image").data).sum().backward();
    } else {
      torch::NoGradGuard no_grad;
      benchmark::DoNotOptimize(enc->forward(b.input("image").data));
    }
  };
  for (int i = 0; i < kWarmUp; ++i) run();
  for (auto _ : state) run();
  state.SetItemsProcessed(state.iterations() * bs);
  state.SetLabel(std::string("samples; batch 64, demo CNN, ") +
                 (channels_last ? "channels-last" : "NCHW") +
                 (backward ? ", " + kernel + " batch norm, forward+backward" : ", forward (eval)"));
}
#define MMINTENT_IMAGE_BENCH(name, backward, channels_last, kernel)                            \
  BENCHMARK_CAPTURE(BM_ImageEncoder, name, backward, channels_last, std::string(kernel)) \
      ->Unit(benchmark::kMillisecond)                                                      \
      ->UseRealTime()
MMINTENT_IMAGE_BENCH(demo_forward_nchw, false, false, "native");
MMINTENT_IMAGE_BENCH(demo_forward_channels_last, false, true, "native");
MMINTENT_IMAGE_BENCH(demo_forward_backward_nchw_native, true, false, "native");
MMINTENT_IMAGE_BENCH(demo_forward_backward_channels_last_native, true, true, "native");
MMINTENT_IMAGE_BENCH(demo_forward_backward_channels_last_fused, true, true, "fused");

void BM_DemoModel_Forward(benchmark::State& state) {
  auto& f = fx();
  Step step(f.demo, f.tokenizer->vocab_size(), f.data.labels.size());
  step.model->eval();
  Batch b = demo_batch(state.range(0));
  for (int i = 0; i < kWarmUp; ++i) {
    torch::NoGradGuard no_grad;
    step.model->forward(b);
  }
  for (auto _ : state) {
    torch::NoGradGuard no_grad;
    benchmark::DoNotOptimize(step.model->forward(b));
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetLabel("samples; eval mode, batch = arg");
}
BENCHMARK(BM_DemoModel_Forward)->Arg(1)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_DemoModel_TrainStep(benchmark::State& state) {
  auto& f = fx();
  Step step(f.demo, f.tokenizer->vocab_size(), f.data.labels.size());
  Batch b = demo_batch(f.demo.data.loader.batch_size);
  for (int i = 0; i < kWarmUp; ++i) step(b);
  for (auto _ : state) benchmark::DoNotOptimize(step(b));
  state.SetItemsProcessed(state.iterations() * b.size());
  state.counters["steps_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel("samples; forward + loss + backward + clip + AdamW, batch 64");
}
BENCHMARK(BM_DemoModel_TrainStep)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Clinc150Model_TrainStep(benchmark::State& state) {
  auto& f = fx();
  Step step(repo_config("clinc150", f.manifest), 6001, 151);
  Batch b = clinc_text_batch(64);
  for (int i = 0; i < kWarmUp; ++i) step(b);
  for (auto _ : state) benchmark::DoNotOptimize(step(b));
  state.SetItemsProcessed(state.iterations() * b.size());
  state.counters["steps_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel("samples; CLINC150 text model, random ids of lengths 4..20, batch 64");
}
BENCHMARK(BM_Clinc150Model_TrainStep)->Unit(benchmark::kMillisecond)->UseRealTime();

/// The training loop as it runs: one pass of the loader (1 worker, as configs/demo.yaml)
/// feeding the step. `wait_fraction`: share of the pass the step spent waiting in next() (a
/// loader that never starves the step keeps it near 0).
void BM_DemoTrainLoop(benchmark::State& state) {
  auto& f = fx();
  Config c = f.demo;
  c.data.loader.num_workers = state.range(0);
  Step step(c, f.tokenizer->vocab_size(), f.data.labels.size());
  auto loader = make_loader(c, f.data.train, /*training=*/true);
  step(demo_batch(c.data.loader.batch_size));  // warm-up
  double wait = 0, total = 0;
  int64_t samples = 0, epoch = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    loader->start_epoch(epoch++);
    for (;;) {
      const auto w0 = std::chrono::steady_clock::now();
      auto b = loader->next();
      wait += seconds_since(w0);
      if (!b) break;
      step(*b);
      samples += b->size();
    }
    total += seconds_since(t0);
  }
  state.SetItemsProcessed(samples);
  state.counters["wait_fraction"] = total > 0 ? wait / total : 0;
  state.SetLabel("samples; loader workers = arg");
}
BENCHMARK(BM_DemoTrainLoop)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace mmintent::bench

int main(int argc, char** argv) {
  using namespace mmintent::bench;
  std::vector<char*> args;
  bool smoke = false;
  static std::string min_time = "--benchmark_min_time=0.01";
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--manifest=", 0) == 0) {
      g_manifest = a.substr(11);
    } else if (a.rfind("--threads=", 0) == 0) {
      g_threads = std::stoi(a.substr(10));
    } else if (a == "--smoke") {
      smoke = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  if (smoke) args.insert(args.begin() + 1, min_time.data());
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;
  try {
    mmintent::configure_threads(g_threads);
    cv::setNumThreads(0);  // as the library's runs do: the loader threads decode in parallel
    auto& f = Fixture::get(g_manifest, smoke ? 256 : 1024);
    benchmark::AddCustomContext("manifest", f.manifest);
    benchmark::AddCustomContext("samples", std::to_string(f.data.train->size()));
    benchmark::AddCustomContext("libtorch_threads", std::to_string(g_threads));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmintent_bench_components: %s\n", e.what());
    return 1;
  }
  return 0;
}
