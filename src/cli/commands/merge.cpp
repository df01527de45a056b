// mmintent merge RUN_DIR --out NEW_RUN_DIR [--overwrite]
#include "command.h"

#include "mmintent/app/tune.h"

#include <iostream>
#include <memory>

namespace mmintent::cli {

Command add_merge(CLI::App& app) {
  struct State {
    std::string run_dir, out_dir;
    bool overwrite = false;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("merge", "Fold the low-rank adapter of a run tuned with tune.method=lora into plain weights");
  cmd->footer("Example:\n  mmintent merge runs/demo_lora --out runs/demo_merged");
  cmd->add_option("run_dir", s->run_dir, "Adapter run directory written by 'tune' (only read)")->required();
  cmd->add_option("--out", s->out_dir, "The new run directory (model.pt and the run's serving files)")->required();
  cmd->add_flag("--overwrite", s->overwrite, "Allow a non-empty --out directory");
  return {cmd, [s]() -> int {
            merge_adapter_run(s->run_dir, s->out_dir, s->overwrite);
            std::cout << "merged " << s->run_dir << " into " << s->out_dir << "/model.pt\n";
            return kOk;
          }};
}

}  // namespace mmintent::cli
