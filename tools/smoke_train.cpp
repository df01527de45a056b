// mmintent_smoke: a short end-to-end training check on synthetic multimodal data that needs
// only LibTorch, so it builds and runs wherever a (CUDA) LibTorch does.
//
//   mmintent_smoke [--device auto|cpu|cuda|cuda:N] [--epochs N] [--run-dir DIR]
//                  [--precision fp32|bf16] [--channels-last] [--backend auto|gloo|nccl]
// Under torchrun (WORLD_SIZE > 1) the ranks train data-parallel on shards of the synthetic
// set (c10d: NCCL or Gloo); "auto"/"cuda" devices become cuda:LOCAL_RANK.
//
// The synthetic task (tests/support/synthetic.h) needs both modalities to be solved. It trains, checks the accuracy, writes checkpoints, loads
// the final weights back on the CPU and checks the CPU predictions equal the device's.

#include "mmintent/distributed/process_group.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/training/predictions.h"
#include "mmintent/training/device.h"
#include "mmintent/training/trainer.h"
#include "support/synthetic.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>


int main(int argc, char** argv) {
  std::string device = "auto", run_dir, backend = "auto";
  int64_t epochs = 6;
  std::string precision = "fp32";
  bool channels_last = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--device" && i + 1 < argc) device = argv[++i];
    else if (a == "--epochs" && i + 1 < argc) epochs = std::stoll(argv[++i]);
    else if (a == "--run-dir" && i + 1 < argc) run_dir = argv[++i];
    else if (a == "--precision" && i + 1 < argc) precision = argv[++i];
    else if (a == "--channels-last") channels_last = true;
    else if (a == "--backend" && i + 1 < argc) backend = argv[++i];
    else {
      std::fprintf(stderr, "usage: mmintent_smoke [--device D] [--epochs N] [--run-dir DIR] "
                           "[--precision fp32|bf16] [--channels-last] [--backend B]\n");
      return 2;
    }
  }
  try {
    const auto world = mmintent::world_from_env();
    std::shared_ptr<mmintent::Communicator> comm;
    if (world.distributed()) {
      device = mmintent::rank_device(device, world.local_rank);
      mmintent::DistributedOptions d;
      d.backend = backend;
      d.timeout_seconds = 120;
      comm = mmintent::init_process_group(world, d, mmintent::resolve_device(device));
    }
    if (run_dir.empty()) {
      run_dir = (std::filesystem::temp_directory_path() / "mmintent_smoke").string();
    }
    if (world.rank == 0) std::filesystem::remove_all(run_dir);
    if (comm) comm->barrier();  // rank 0 has cleared the run directory
    mmintent::configure_threads(world.distributed() ? 1 : 0);
    torch::manual_seed(7);
    mmintent::IntentClassifierOptions mo;
    mo.num_classes(8);
    mo.text(mmintent::TextEncoderOptions().vocab_size(30).embedding_dim(32).hidden_size(32));
    mo.image(mmintent::ImageEncoderOptions().channels({16, 32}).out_dim(32).channels_last(channels_last));
    mo.head(mmintent::HeadOptions().hidden({64}).dropout(0.1));
    mmintent::IntentClassifier model(mo);

    mmintent::TrainerOptions to;
    to.epochs = epochs;
    to.device = device;
    to.precision = precision;
    to.optimizer.lr = 3e-3;
    to.scheduler.type = "cosine";
    to.scheduler.warmup_steps = 10;
    to.grad_clip = 1.0;
    to.files = mmintent::RunDirectory(run_dir).trainer_files();
    to.early_stopping.metric = "val.accuracy";
    to.early_stopping.mode = "max";
    to.progress = "lines";

    mmintent::test::SyntheticSource train(2048, 64, 1, true), val(512, 128, 2, false);
    if (comm) {
      train.shard(world.rank, world.world_size);
      val.shard(world.rank, world.world_size);
      if (world.rank != 0) to.progress = "none";
    }
    mmintent::Trainer trainer(model, to, comm);
    std::printf("rank %d of %d: device: %s, threads: %d, torch %s, precision %s%s%s\n", world.rank,
                world.world_size, trainer.device().str().c_str(), at::get_num_threads(),
                TORCH_VERSION, precision.c_str(), channels_last ? ", channels-last" : "",
                comm ? (", backend " + comm->backend()).c_str() : "");
    const auto t0 = std::chrono::steady_clock::now();
    auto result = trainer.fit(train, &val);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto metrics = trainer.evaluate(val, "val");
    std::printf("epochs: %lld, best epoch: %lld, val.accuracy: %.4f, %.1f samples/s\n",
                static_cast<long long>(result.epochs_completed),
                static_cast<long long>(result.best_epoch), metrics["val.accuracy"],
                2048.0 * result.epochs_completed / secs);

    // The checkpoint written on the device (by rank 0) loads on the CPU and predicts the same.
    if (comm) comm->barrier();
    // (in fp32 on both sides: the comparison is of the weights, not of the precision)
    auto on_device = mmintent::collect_predictions(trainer.model(), val, trainer.device());
    mmintent::IntentClassifier cpu_model(mo);
    mmintent::load_checkpoint(mmintent::RunDirectory(run_dir).weights_file().string(), *cpu_model, nullptr, torch::kCPU, false);
    auto on_cpu = mmintent::collect_predictions(cpu_model, val, torch::kCPU);
    const double max_diff = (on_device.probs - on_cpu.probs).abs().max().item<double>();
    std::printf("cpu reload: max |p_device - p_cpu| = %.3g\n", max_diff);

    const bool ok = metrics["val.accuracy"] >= 0.9 && max_diff < 1e-3;
    std::printf("rank %d: %s\n", world.rank, ok ? "SMOKE OK" : "SMOKE FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmintent_smoke: %s\n", e.what());
    return 1;
  }
}
