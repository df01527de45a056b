// mmintent train CONFIG [KEY=VALUE ...] [--resume PATH|auto]
#include "command.h"

#include "mmintent/app/run.h"
#include "mmintent/config/loader.h"
#include "mmintent/distributed/process_group.h"
#include "mmintent/training/device.h"
#include "mmintent/training/interrupt.h"

#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>
#include <vector>

namespace mmintent::cli {

Command add_train(CLI::App& app) {
  struct State {
    std::string config_path, resume;
    std::vector<std::string> overrides;
    bool json = false;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("train", "Train (and evaluate) a model from a YAML config");
  // No CLI11 file check: a missing config is a config error (exit 3) from every command.
  cmd->footer("Example:\n  mmintent train configs/demo.yaml train.epochs=5 output.dir=runs/short");
  cmd->add_option("config", s->config_path, "YAML config file")->required();
  cmd->add_option("overrides", s->overrides,
                  "Dotted KEY=VALUE overrides, e.g. train.optimizer.lr=3e-4 model.text_encoder.type=gru");
  cmd->add_option("--resume", s->resume, "Resume from a checkpoint path, or 'auto' for output.dir/last.pt");
  cmd->add_flag("--json", s->json,
                "Print only a JSON summary on stdout (run directory, epochs, stop reason, metrics per "
                "split) instead of the tables; the log stays on stderr");
  return {cmd,
          [s]() -> int {
            install_stop_handlers();
            const auto world = world_from_env();
            auto config = load_config(s->config_path, s->overrides);
            TrainRunOptions options;
            options.resume = s->resume;
            options.print_tables = !s->json;
            if (world.distributed()) {
              config.runtime.device = rank_device(config.runtime.device, world.local_rank);
              config.runtime.threads = rank_threads(config.runtime.threads, config.data.loader.num_workers, world);
              options.communicator =
                  init_process_group(world, config.distributed, resolve_device(config.runtime.device));
            }
            auto result = train_from_config(config, options);
            if (world.rank != 0) {
              if (!s->json) {
                std::cout << "rank " << world.rank << " of " << world.world_size
                          << ": done; rank 0 wrote the run directory " << result.run_dir << "\n";
              }
              return kOk;
            }
            if (s->json) {
              nlohmann::json metrics = nlohmann::json::object();
              for (const auto& [split, m] : result.metrics) metrics[split] = metrics_json(m);
              print_json({{"run_dir", result.run_dir},
                          {"epochs_completed", result.fit.epochs_completed},
                          {"best_epoch", result.fit.best_epoch},
                          {"stop_reason", result.fit.stop_reason},
                          {"metrics", metrics}});
              return kOk;
            }
            print_run_summary(result.run_dir, result.metrics);
            return kOk;
          },
          /*multi_process=*/true};
}

}  // namespace mmintent::cli
