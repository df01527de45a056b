// mmintent_bench_inference: serving latency and throughput of a finished run, through
// mmintent::Predictor, on the CPU.
//
//   mmintent_bench_inference RUN_DIR [--manifest=PATH] [--requests=N] [--threads=N] [--smoke]
//
// Single requests: N calls of Predictor::predict, one (text, image) request each, taken in
// turn from the manifest (default: the run's training manifest, from its config.yaml); prints
// p50, p90, p99 and max latency. Every request decodes its image from disk and tokenises its
// text, as a served request would. Batches: Predictor::predict_batch of 64 and 256 requests,
// requests per second. --threads: LibTorch intra-op threads (default 1: a server runs one
// request per core; 2 is shown too).

#include "mmintent/app/run.h"
#include "mmintent/run/setup.h"
#include "mmintent/config/loader.h"
#include "mmintent/data/manifest.h"
#include "mmintent/error.h"
#include "mmintent/inference/predictor.h"

#include <opencv2/core/utility.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto k = static_cast<size_t>(std::min<double>(static_cast<double>(v.size() - 1),
                                                      p / 100.0 * static_cast<double>(v.size())));
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  std::string run_dir, manifest;
  int64_t requests = 2000;
  std::vector<int> thread_counts = {1, 2};
  bool smoke = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--manifest=", 0) == 0) manifest = a.substr(11);
    else if (a.rfind("--requests=", 0) == 0) requests = std::stoll(a.substr(11));
    else if (a.rfind("--threads=", 0) == 0) thread_counts = {std::stoi(a.substr(10))};
    else if (a == "--smoke") smoke = true;
    else if (!a.empty() && a[0] != '-' && run_dir.empty()) run_dir = a;
    else {
      std::fprintf(stderr, "usage: mmintent_bench_inference RUN_DIR [--manifest=PATH] [--requests=N] "
                           "[--threads=N] [--smoke]\n");
      return 2;
    }
  }
  if (run_dir.empty()) {
    std::fprintf(stderr, "mmintent_bench_inference: give a finished run directory (e.g. runs/demo)\n");
    return 2;
  }
  if (smoke) requests = std::min<int64_t>(requests, 20);
  try {
    cv::setNumThreads(0);
    const auto config = mmintent::load_config(run_dir + "/config.yaml");
    if (manifest.empty()) manifest = config.data.train;
    const auto m = mmintent::read_manifest(manifest, mmintent::manifest_read_options(config, false));
    if (m.records.empty()) throw mmintent::Error(manifest + " has no records");
    std::vector<mmintent::PredictInput> inputs;
    for (const auto& r : m.records) inputs.push_back({r.text, r.image});
    std::printf("run %s, requests from %s (%zu records)\n", run_dir.c_str(), manifest.c_str(),
                inputs.size());
    for (int threads : thread_counts) {
      mmintent::PredictorOptions po;
      po.device = "cpu";
      po.threads = threads;
      auto predictor = mmintent::Predictor::load(run_dir, po);
      for (int i = 0; i < 20; ++i) predictor.predict(inputs[static_cast<size_t>(i) % inputs.size()]);  // warm-up
      std::vector<double> ms;
      ms.reserve(static_cast<size_t>(requests));
      for (int64_t i = 0; i < requests; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        auto p = predictor.predict(inputs[static_cast<size_t>(i) % inputs.size()], 3);
        ms.push_back(seconds_since(t0) * 1e3);
        if (p.top.empty()) throw mmintent::Error("empty prediction");
      }
      std::printf("LibTorch threads %d: single requests (%lld): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                  threads, static_cast<long long>(requests), percentile(ms, 50), percentile(ms, 90),
                  percentile(ms, 99), *std::max_element(ms.begin(), ms.end()));
      for (int64_t bs : {int64_t{64}, int64_t{256}}) {
        std::vector<mmintent::PredictInput> batch;
        for (int64_t i = 0; i < bs; ++i) batch.push_back(inputs[static_cast<size_t>(i) % inputs.size()]);
        predictor.predict_batch(batch);
        const int reps = smoke ? 1 : 10;
        const auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < reps; ++r) predictor.predict_batch(batch);
        const double s = seconds_since(t0);
        std::printf("LibTorch threads %d: batches of %lld: %.0f requests/s (%.1f ms per batch)\n", threads,
                    static_cast<long long>(bs), static_cast<double>(bs * reps) / s, s / reps * 1e3);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmintent_bench_inference: %s\n", e.what());
    return 1;
  }
  return 0;
}
