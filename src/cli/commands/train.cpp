// mmintent train CONFIG [KEY=VALUE ...] [--resume PATH|auto]
#include "command.h"

#include "mmintent/app/run.h"
#include "mmintent/config/loader.h"
#include "mmintent/distributed/process_group.h"
#include "mmintent/training/device.h"
#include "mmintent/training/interrupt.h"

#include <iostream>
#include <memory>
#include <vector>

namespace mmintent::cli {

Command add_train(CLI::App& app) {
  struct State {
    std::string config_path, resume;
    std::vector<std::string> overrides;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("train", "Train (and evaluate) a model from a YAML config");
  cmd->add_option("config", s->config_path, "YAML config file")->required()->check(CLI::ExistingFile);
  cmd->add_option("overrides", s->overrides,
                  "Dotted KEY=VALUE overrides, e.g. train.optimizer.lr=3e-4 model.text_encoder.type=gru");
  cmd->add_option("--resume", s->resume, "Resume from a checkpoint path, or 'auto' for output.dir/last.pt");
  return {cmd,
          [s]() -> int {
            install_stop_handlers();
            const auto world = world_from_env();
            auto config = load_config(s->config_path, s->overrides);
            TrainRunOptions options;
            options.resume = s->resume;
            if (world.distributed()) {
              config.runtime.device = rank_device(config.runtime.device, world.local_rank);
              options.communicator =
                  init_process_group(world, config.distributed, resolve_device(config.runtime.device));
            }
            auto result = train_from_config(config, options);
            if (world.rank != 0) {
              std::cout << "rank " << world.rank << " of " << world.world_size
                        << ": done; rank 0 wrote the run directory " << result.run_dir << "\n";
              return kOk;
            }
            print_run_summary(result.run_dir, result.metrics);
            return kOk;
          },
          /*multi_process=*/true};
}

}  // namespace mmintent::cli
