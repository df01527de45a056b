// mmintent eval RUN_DIR [--split test|val|MANIFEST]
#include "command.h"

#include "mmintent/app/run.h"

#include <iomanip>
#include <iostream>
#include <memory>

namespace mmintent::cli {

Command add_eval(CLI::App& app) {
  struct State {
    std::string run_dir, split = "test";
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("eval", "Evaluate a finished run on a split or a manifest");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train'")->required();
  cmd->add_option("--split", s->split, "test, val, or a manifest file");
  return {cmd, [s]() -> int {
            auto m = evaluate_run(s->run_dir, s->split);
            std::cout << "accuracy: " << std::fixed << std::setprecision(4) << m.accuracy
                      << "  macro_f1: " << m.macro_f1 << "\n";
            return kOk;
          }};
}

}  // namespace mmintent::cli
