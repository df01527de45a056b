// mmintent config CONFIG [KEY=VALUE ...]: check a config and print the effective one.
#include "command.h"

#include "mmintent/config/loader.h"

#include <iostream>
#include <memory>
#include <vector>

namespace mmintent::cli {

Command add_config(CLI::App& app) {
  struct State {
    std::string config_path;
    std::vector<std::string> overrides;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("config", "Check a config and print the effective config");
  cmd->footer("Example:\n  mmintent config configs/demo.yaml model.text_encoder.type=gru");
  cmd->add_option("config", s->config_path, "YAML config file")->required();
  cmd->add_option("overrides", s->overrides, "Dotted KEY=VALUE overrides");
  return {cmd, [s]() -> int {
            std::cout << to_yaml(load_config(s->config_path, s->overrides));
            return kOk;
          }};
}

}  // namespace mmintent::cli
