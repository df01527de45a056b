// mmintent eval RUN_DIR [--split test|val|MANIFEST]
#include "command.h"

#include "mmintent/app/run.h"

#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>
#include <memory>

namespace mmintent::cli {

Command add_eval(CLI::App& app) {
  struct State {
    std::string run_dir, split = "test";
    bool json = false;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("eval", "Evaluate a finished run on a split or a manifest");
  cmd->footer("Example:\n  mmintent eval runs/demo --split test --json");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train'")->required();
  cmd->add_option("--split", s->split, "test, val, or a manifest file")->capture_default_str();
  cmd->add_flag("--json", s->json, "Print only a JSON summary on stdout instead of the table");
  return {cmd, [s]() -> int {
            auto m = evaluate_run(s->run_dir, s->split, /*print_table=*/!s->json);
            if (s->json) {
              print_json({{"run_dir", s->run_dir}, {"split", s->split}, {"metrics", metrics_json(m)}});
              return kOk;
            }
            std::cout << "accuracy: " << std::fixed << std::setprecision(4) << m.accuracy
                      << "  macro_f1: " << m.macro_f1 << "\n";
            return kOk;
          }};
}

}  // namespace mmintent::cli
