// mmintent_smoke: a short end-to-end training check on synthetic multimodal data that needs
// only LibTorch, so it builds and runs wherever a (CUDA) LibTorch does.
//
//   mmintent_smoke [--device auto|cpu|cuda|cuda:N] [--epochs N] [--run-dir DIR]
//
// The label is (keyword token % 4) + 4 * (bright half of the image), so only a model that
// uses both modalities can be right. It trains, checks the accuracy, writes checkpoints, loads
// the final weights back on the CPU and checks the CPU predictions equal the device's.

#include "mmintent/evaluation/predictions.h"
#include "mmintent/training/device.h"
#include "mmintent/training/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>

namespace {

class SyntheticSource : public mmintent::BatchSource {
 public:
  SyntheticSource(int64_t n, int64_t batch_size, uint64_t seed, bool shuffle)
      : n_(n), batch_size_(batch_size), seed_(seed), shuffle_(shuffle) {
    std::mt19937_64 rng(seed);
    const int64_t T = 12;
    ids_ = torch::zeros({n, T}, torch::kLong);
    lengths_ = torch::zeros({n}, torch::kLong);
    images_ = torch::randn({n, 1, 16, 16}) * 0.3;
    labels_ = torch::zeros({n}, torch::kLong);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t len = 3 + static_cast<int64_t>(rng() % (T - 3));
      const int64_t keyword = 1 + static_cast<int64_t>(rng() % 8);  // ids 1..8 carry the class
      const int64_t pos = static_cast<int64_t>(rng() % len);
      for (int64_t t = 0; t < len; ++t) ids_[i][t] = 9 + static_cast<int64_t>(rng() % 40);
      ids_[i][pos] = keyword;
      lengths_[i] = len;
      const int64_t half = static_cast<int64_t>(rng() % 2);
      images_[i][0].narrow(1, half * 8, 8) += 1.0;
      labels_[i] = (keyword - 1) % 4 + 4 * half;
    }
    order_.resize(n);
  }
  void start_epoch(int64_t epoch) override {
    std::iota(order_.begin(), order_.end(), 0);
    if (shuffle_) {
      std::mt19937_64 rng(seed_ * 1000003 + static_cast<uint64_t>(epoch));
      std::shuffle(order_.begin(), order_.end(), rng);
    }
    cursor_ = 0;
  }
  std::optional<mmintent::Batch> next() override {
    if (cursor_ >= n_) return std::nullopt;
    const int64_t b = std::min(batch_size_, n_ - cursor_);
    auto idx = torch::from_blob(order_.data() + cursor_, {b}, torch::kLong).clone();
    cursor_ += b;
    mmintent::Batch batch;
    batch.token_ids = ids_.index_select(0, idx);
    batch.lengths = lengths_.index_select(0, idx);
    batch.text_mask = torch::ones({b});
    batch.images = images_.index_select(0, idx);
    batch.image_mask = torch::ones({b});
    batch.labels = labels_.index_select(0, idx);
    batch.indices = idx;
    return batch;
  }
  int64_t num_batches() const override { return (n_ + batch_size_ - 1) / batch_size_; }
  int64_t num_samples() const override { return n_; }
  int64_t batch_size_at(int64_t i) const override {
    return std::min(batch_size_, n_ - i * batch_size_);
  }

 private:
  int64_t n_, batch_size_;
  uint64_t seed_;
  bool shuffle_;
  torch::Tensor ids_, lengths_, images_, labels_;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::string device = "auto", run_dir;
  int64_t epochs = 6;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--device" && i + 1 < argc) device = argv[++i];
    else if (a == "--epochs" && i + 1 < argc) epochs = std::stoll(argv[++i]);
    else if (a == "--run-dir" && i + 1 < argc) run_dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: mmintent_smoke [--device D] [--epochs N] [--run-dir DIR]\n");
      return 2;
    }
  }
  try {
    if (run_dir.empty()) {
      run_dir = (std::filesystem::temp_directory_path() / "mmintent_smoke").string();
    }
    std::filesystem::remove_all(run_dir);
    mmintent::configure_threads(0);
    torch::manual_seed(7);
    mmintent::IntentClassifierOptions mo;
    mo.num_classes(8);
    mo.text(mmintent::TextEncoderOptions().vocab_size(50).embedding_dim(32).hidden_size(32));
    mo.image(mmintent::ImageEncoderOptions().channels({16, 32}).out_dim(32));
    mo.head(mmintent::HeadOptions().hidden({64}).dropout(0.1));
    mmintent::IntentClassifier model(mo);

    mmintent::TrainerOptions to;
    to.epochs = epochs;
    to.device = device;
    to.optimizer.lr = 3e-3;
    to.scheduler.type = "cosine";
    to.scheduler.warmup_steps = 10;
    to.grad_clip = 1.0;
    to.run_dir = run_dir;
    to.early_stopping.metric = "val.accuracy";
    to.early_stopping.mode = "max";
    to.progress = "lines";

    SyntheticSource train(2048, 64, 1, true), val(512, 128, 2, false);
    mmintent::Trainer trainer(model, to);
    std::printf("device: %s, threads: %d, torch %s\n", trainer.device().str().c_str(),
                at::get_num_threads(), TORCH_VERSION);
    const auto t0 = std::chrono::steady_clock::now();
    auto result = trainer.fit(train, &val);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto metrics = trainer.evaluate(val, "val");
    std::printf("epochs: %lld, best epoch: %lld, val.accuracy: %.4f, %.1f samples/s\n",
                static_cast<long long>(result.epochs_completed),
                static_cast<long long>(result.best_epoch), metrics["val.accuracy"],
                2048.0 * result.epochs_completed / secs);

    // The checkpoint written on the device loads on the CPU and predicts the same.
    auto on_device = mmintent::collect_predictions(trainer.model(), val, trainer.device());
    mmintent::IntentClassifier cpu_model(mo);
    mmintent::load_checkpoint(run_dir + "/model.pt", *cpu_model, nullptr, torch::kCPU, false);
    auto on_cpu = mmintent::collect_predictions(cpu_model, val, torch::kCPU);
    const double max_diff = (on_device.probs - on_cpu.probs).abs().max().item<double>();
    std::printf("cpu reload: max |p_device - p_cpu| = %.3g\n", max_diff);

    const bool ok = metrics["val.accuracy"] >= 0.9 && max_diff < 1e-3;
    std::printf("%s\n", ok ? "SMOKE OK" : "SMOKE FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmintent_smoke: %s\n", e.what());
    return 1;
  }
}
