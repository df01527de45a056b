// mmintent_bench_limits: how far training is from what this machine can do.
//
//   mmintent_bench_limits [--manifest=PATH] [--threads=N] [--peak=GFLOPS] [--seconds=S] [--smoke]
//
// Prints:
//  - the BLAS LibTorch calls (the library file that holds sgemm_ in this process, its name and
//    version, and the kernel set it picked: BLIS's bli_arch_string, OpenBLAS's
//    openblas_get_config/corename), and oneDNN's version and instruction set;
//  - sgemm GFLOP/s through at::mm for large square matrices (the BLAS's best case) and for the
//    shapes of the demo's LSTM (batch 64: small, the case the model actually runs);
//  - oneDNN convolution GFLOP/s (at::mkldnn_convolution, the demo CNN's shapes and a larger one);
//  - FLOPs per training step of the demo model counted from the architecture (convolutions,
//    linear layers and LSTM gates; element-wise work, pooling and batch norm left out; backward
//    = 2 x forward), the measured steps per second, the achieved GFLOP/s, and that rate as a
//    share of the sgemm rate and of the nominal peak (--peak, default 300 GFLOP/s).
// --manifest: the data to measure the step on (token lengths matter): default data/demo's
// training manifest when it exists, else a generated demo-like set. --threads: LibTorch
// intra-op threads (default 2). --seconds: time per measurement (default 2). --smoke: tiny
// sizes and times, for CI.

#include "fixture.h"

#include "mmintent/training/device.h"

#include <ATen/ATen.h>
#include <ATen/Version.h>
#include <dlfcn.h>
#include <torch/torch.h>

#include <climits>
#include <cstdlib>
#include <functional>
#include <numeric>

namespace mmintent::bench {
namespace {

double g_seconds = 2.0;

/// Median seconds per call of `fn` over repeated calls for about g_seconds (after 2 warm-ups).
double time_call(const std::function<void()>& fn) {
  fn();
  fn();
  std::vector<double> samples;
  const auto start = std::chrono::steady_clock::now();
  do {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    samples.push_back(seconds_since(t0));
  } while (seconds_since(start) < g_seconds || samples.size() < 3);
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

template <class F>
F symbol(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  return realpath(p.c_str(), buf) ? std::string(buf) : p;
}

void print_blas() {
  // LibTorch's BLAS: whichever library in this process defines sgemm_.
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info info{};
  std::string file = "none found";
  if (sgemm && dladdr(sgemm, &info) && info.dli_fname) file = real_path(info.dli_fname);
  std::printf("BLAS library:   %s\n", file.c_str());
  // The system's pick, which other programs load (mmintent's find BLIS by run path).
  std::printf("  system's:     /etc/alternatives/libblas.so.3-x86_64-linux-gnu -> %s\n",
              real_path("/etc/alternatives/libblas.so.3-x86_64-linux-gnu").c_str());
  std::string name = "unknown (no vendor query found)";
  if (auto cfg = symbol<char* (*)()>("openblas_get_config")) {
    auto core = symbol<char* (*)()>("openblas_get_corename");
    name = std::string("OpenBLAS: ") + cfg() + (core ? std::string(", kernel ") + core() : "");
  } else if (file.find("blis") != std::string::npos) {
    // Debian's BLIS libblas.so.3 exports only the BLAS API; its sibling libblis.so.4 (the same
    // build) answers what version and kernel set (sub-configuration) it picks on this CPU.
    const std::string blis = file.substr(0, file.rfind('/')) + "/libblis.so.4";
    if (void* h = dlopen(blis.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      auto version = reinterpret_cast<const char* (*)()>(dlsym(h, "bli_info_get_version_str"));
      auto arch_id = reinterpret_cast<int (*)()>(dlsym(h, "bli_arch_query_id"));
      auto arch_name = reinterpret_cast<const char* (*)(int)>(dlsym(h, "bli_arch_string"));
      name = std::string("BLIS ") + (version ? version() : "?") +
             (arch_id && arch_name ? std::string(", kernel set ") + arch_name(arch_id()) : "");
    } else {
      name = "BLIS (libblis.so.4 not found beside it for the version and kernel set)";
    }
  } else if (file.find("/blas/") != std::string::npos) {
    name = "reference BLAS (netlib): unoptimised";
  } else if (symbol<void* (*)()>("mkl_get_version_string")) {
    name = "Intel MKL";
  }
  std::printf("  name/kernel:  %s\n", name.c_str());
  std::printf("  threads:      OMP_NUM_THREADS=%s BLIS_NUM_THREADS=%s OPENBLAS_NUM_THREADS=%s\n",
              std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "(unset)",
              std::getenv("BLIS_NUM_THREADS") ? std::getenv("BLIS_NUM_THREADS") : "(unset)",
              std::getenv("OPENBLAS_NUM_THREADS") ? std::getenv("OPENBLAS_NUM_THREADS") : "(unset)");

  struct DnnlVersion {
    int major, minor, patch;
    const char* hash;
    unsigned cpu_runtime, gpu_runtime;
  };
  auto dnnl_version = symbol<const DnnlVersion* (*)()>("dnnl_version");
  auto dnnl_isa = symbol<int (*)()>("dnnl_get_effective_cpu_isa");
  if (dnnl_version) {
    const auto* v = dnnl_version();
    std::printf("oneDNN:         %d.%d.%d, effective ISA code 0x%x (dnnl_cpu_isa_t)\n", v->major,
                v->minor, v->patch, dnnl_isa ? dnnl_isa() : 0);
  } else {
    std::printf("oneDNN:         not loaded\n");
  }
  std::printf("LibTorch:       %s, intra-op threads %d, mkldnn %s\n",
              at::show_config().find("MKL-DNN") != std::string::npos ? "built with MKL-DNN" : "no MKL-DNN",
              at::get_num_threads(), at::globalContext().userEnabledMkldnn() ? "enabled" : "disabled");
}

double sgemm_gflops(int64_t m, int64_t k, int64_t n) {
  auto a = torch::randn({m, k});
  auto b = torch::randn({k, n});
  auto c = torch::empty({m, n});
  const double s = time_call([&] { at::mm_out(c, a, b); });
  return 2.0 * static_cast<double>(m * k * n) / s / 1e9;
}

enum class ConvPath { onednn, conv2d, conv2d_no_mkldnn };

/// GFLOP/s of a 3x3 "same" convolution, forward only, through `path`: oneDNN directly
/// (at::mkldnn_convolution), at::conv2d as the models call it (LibTorch picks the kernel), or
/// at::conv2d with oneDNN switched off (im2col + the BLAS's sgemm).
double conv_gflops(int64_t batch, int64_t cin, int64_t cout, int64_t hw, ConvPath path) {
  auto x = torch::randn({batch, cin, hw, hw});
  auto w = torch::randn({cout, cin, 3, 3});
  const bool was = at::globalContext().userEnabledMkldnn();
  at::globalContext().setUserEnabledMkldnn(path != ConvPath::conv2d_no_mkldnn);
  const double s = time_call([&] {
    if (path == ConvPath::onednn) {
      at::mkldnn_convolution(x, w, c10::nullopt, {1, 1}, {1, 1}, {1, 1}, 1);
    } else {
      at::conv2d(x, w, {}, {1, 1}, {1, 1});
    }
  });
  at::globalContext().setUserEnabledMkldnn(was);
  return 2.0 * static_cast<double>(batch * cout * hw * hw * cin * 9) / s / 1e9;
}

/// Forward FLOPs of one batch of the model `o` with images of hw x hw and texts of
/// `mean_tokens` real tokens (packed: padding costs nothing).
struct Flops {
  double conv = 0, linear = 0, rnn = 0;
  double total() const { return conv + linear + rnn; }
};

Flops forward_flops(const IntentClassifierOptions& o, int64_t batch, int64_t height, int64_t width,
                    double mean_tokens) {
  Flops f;
  const double B = static_cast<double>(batch);
  int64_t text_dim = 0, image_dim = 0;
  if (o.uses("image")) {
    const auto& e = o.image();
    double h = static_cast<double>(height), w = static_cast<double>(width);
    double cin = static_cast<double>(e.in_channels());
    const double kk = static_cast<double>(e.kernel_size() * e.kernel_size());
    for (int64_t cout : e.channels()) {
      for (int64_t c = 0; c < e.convs_per_block(); ++c) {
        f.conv += 2 * B * h * w * static_cast<double>(cout) * cin * kk;
        cin = static_cast<double>(cout);
      }
      if (e.pool() != "none") {
        h = std::floor(h / 2);
        w = std::floor(w / 2);
      }
    }
    f.linear += 2 * B * cin * static_cast<double>(e.out_dim());
    image_dim = e.out_dim();
  }
  if (o.uses("text")) {
    const auto& t = o.text();
    const double H = static_cast<double>(t.hidden_size());
    const double gates = t.type() == "lstm" ? 4 : 3;
    const double dirs = t.bidirectional() ? 2 : 1;
    double in = static_cast<double>(t.embedding_dim());
    for (int64_t l = 0; l < t.num_layers(); ++l) {
      f.rnn += dirs * B * mean_tokens * 2 * gates * H * (in + H);
      in = H * dirs;
    }
    text_dim = static_cast<int64_t>(H * dirs);
  }
  const bool both = o.uses("text") && o.uses("image");
  double in = static_cast<double>(text_dim + image_dim + (both ? 2 : 0));
  if (both && o.fusion().type() == "gated") {
    const double d = static_cast<double>(o.fusion().dim());
    f.linear += 2 * B * (static_cast<double>(text_dim) * d + static_cast<double>(image_dim) * d + in * d);
    in = d;
  }
  for (int64_t h : o.head().hidden()) {
    f.linear += 2 * B * in * static_cast<double>(h);
    in = static_cast<double>(h);
  }
  f.linear += 2 * B * in * static_cast<double>(o.num_classes());
  return f;
}

}  // namespace
}  // namespace mmintent::bench

int main(int argc, char** argv) {
  using namespace mmintent::bench;
  std::string manifest;
  int threads = 2;
  double peak = 300;
  bool smoke = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--manifest=", 0) == 0) manifest = a.substr(11);
    else if (a.rfind("--threads=", 0) == 0) threads = std::stoi(a.substr(10));
    else if (a.rfind("--peak=", 0) == 0) peak = std::stod(a.substr(7));
    else if (a.rfind("--seconds=", 0) == 0) g_seconds = std::stod(a.substr(10));
    else if (a == "--smoke") smoke = true;
    else {
      std::fprintf(stderr, "usage: mmintent_bench_limits [--manifest=PATH] [--threads=N] [--peak=GFLOPS] "
                           "[--seconds=S] [--smoke]\n");
      return 2;
    }
  }
  if (smoke) g_seconds = 0.05;
  if (manifest.empty()) {
    const std::string demo = std::string(MMINTENT_SOURCE_DIR) + "/data/demo/train.jsonl";
    if (fs::exists(demo) && !smoke) manifest = demo;
  }
  try {
    mmintent::configure_threads(threads);
    cv::setNumThreads(0);
    print_blas();
    std::printf("\nsgemm through at::mm (%d threads), GFLOP/s:\n", at::get_num_threads());
    double best = 0;
    for (int64_t n : smoke ? std::vector<int64_t>{256} : std::vector<int64_t>{512, 1024, 2048}) {
      const double g = sgemm_gflops(n, n, n);
      best = std::max(best, g);
      std::printf("  %4lld x %4lld x %4lld   %7.1f\n", static_cast<long long>(n), static_cast<long long>(n),
                  static_cast<long long>(n), g);
    }
    // The demo's LSTM: per time step, [64 x (E+H)] x [(E+H) x 4H] with E = H = 64; and the
    // input projection of a whole batch of tokens at once, [64*14 x 64] x [64 x 256].
    std::printf("  %-22s %7.1f   (demo LSTM, one time step)\n", "64 x 128 x 256", sgemm_gflops(64, 128, 256));
    std::printf("  %-22s %7.1f   (demo LSTM input projection, all tokens)\n", "896 x 64 x 256",
                sgemm_gflops(896, 64, 256));

    std::printf("\n3x3 convolution, forward, batch 64, GFLOP/s:  oneDNN  at::conv2d  at::conv2d, oneDNN off (im2col + sgemm)\n");
    struct Shape { int64_t cin, cout, hw; const char* what; };
    const std::vector<Shape> shapes = smoke ? std::vector<Shape>{{32, 32, 14, "smoke"}}
                                            : std::vector<Shape>{{1, 32, 28, "demo block 1, first conv"},
                                                                 {32, 32, 28, "demo block 1, second conv"},
                                                                 {64, 64, 14, "demo block 2, second conv"},
                                                                 {128, 128, 7, "demo block 3, second conv"},
                                                                 {64, 64, 56, "larger: 64 -> 64 at 56x56"}};
    for (const auto& s : shapes) {
      std::printf("  %3lld -> %3lld at %2lldx%-2lld %-28s %7.1f  %7.1f  %7.1f\n", static_cast<long long>(s.cin),
                  static_cast<long long>(s.cout), static_cast<long long>(s.hw), static_cast<long long>(s.hw),
                  s.what, conv_gflops(64, s.cin, s.cout, s.hw, ConvPath::onednn),
                  conv_gflops(64, s.cin, s.cout, s.hw, ConvPath::conv2d),
                  conv_gflops(64, s.cin, s.cout, s.hw, ConvPath::conv2d_no_mkldnn));
    }

    auto& f = Fixture::get(manifest, smoke ? 128 : 1024);
    const auto& c = f.demo;
    const auto options = c.model_options(f.tokenizer->vocab_size(), f.data.labels.size());
    double tokens = 0;
    for (int64_t i = 0; i < f.data.train->size(); ++i) {
      tokens += static_cast<double>(std::max<size_t>(1, f.data.train->token_ids(i).size()));
    }
    const double mean_tokens = tokens / static_cast<double>(std::max<int64_t>(1, f.data.train->size()));
    const int64_t bs = c.data.loader.batch_size;
    const auto fwd = forward_flops(options, bs, c.data.image.height, c.data.image.width, mean_tokens);
    const double step_flops = 3 * fwd.total();
    Step step(c, f.tokenizer->vocab_size(), f.data.labels.size());
    std::vector<int64_t> idx(static_cast<size_t>(std::min<int64_t>(bs, f.data.train->size())));
    std::iota(idx.begin(), idx.end(), 0);
    const auto batch = f.data.train->collate(idx, nullptr, 0);
    const double s = time_call([&] { step(batch); });
    std::printf("\ndemo model (configs/demo.yaml) on %s (%lld samples, %.1f tokens per text on average)\n",
                f.manifest.c_str(), static_cast<long long>(f.data.train->size()), mean_tokens);
    int64_t params = 0;
    for (const auto& p : step.model->parameters()) params += p.numel();
    std::printf("  parameters: %lld (bench/reference/train_reference.py prints its own count)\n",
                static_cast<long long>(params));
    std::printf("  forward FLOPs per batch of %lld: %.3f G (convolutions %.3f, LSTM %.3f, linear %.3f)\n",
                static_cast<long long>(bs), fwd.total() / 1e9, fwd.conv / 1e9, fwd.rnn / 1e9, fwd.linear / 1e9);
    std::printf("  training step (forward + backward = 3 x forward): %.3f GFLOP\n", step_flops / 1e9);
    std::printf("  measured: %.1f ms per step (median), %.1f steps/s, %.0f samples/s\n", s * 1e3, 1 / s,
                static_cast<double>(bs) / s);
    std::printf("  achieved: %.1f GFLOP/s = %.0f%% of the best sgemm above, %.0f%% of the nominal peak (%.0f GFLOP/s)\n",
                step_flops / s / 1e9, 100 * step_flops / s / 1e9 / best, 100 * step_flops / s / 1e9 / peak, peak);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmintent_bench_limits: %s\n", e.what());
    return 1;
  }
  return 0;
}
