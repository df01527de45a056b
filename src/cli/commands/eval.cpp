// mmintent eval RUN_DIR [--split test|val|MANIFEST] [--perturb typos:0.1 ...]
#include "command.h"

#include "mmintent/app/run.h"
#include "mmintent/data/text_noise.h"

#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>
#include <memory>

namespace mmintent::cli {

Command add_eval(CLI::App& app) {
  struct State {
    std::string run_dir, split = "test";
    std::vector<std::string> perturb;
    bool json = false;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand("eval", "Evaluate a finished run on a split or a manifest");
  cmd->footer("Example:\n  mmintent eval runs/demo --split test --json\n  mmintent eval runs/demo --perturb typos:0.1 --perturb deletion:0.1");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train'")->required();
  cmd->add_option("--split", s->split, "test, val, or a manifest file")->capture_default_str();
  cmd->add_option("--perturb", s->perturb,
                  "Also evaluate on a noisy copy of the split's texts: typos:R, deletion:R or swap:R (R in [0, 1]; "
                  "repeatable); report.json's SPLIT.robustness gives each one's accuracy and its drop")
      ->check([](const std::string& spec) -> std::string {
        try {
          parse_text_noise(spec);
          return {};
        } catch (const std::invalid_argument& e) {
          return e.what();
        }
      });
  cmd->add_flag("--json", s->json, "Print only a JSON summary on stdout instead of the table");
  return {cmd, [s]() -> int {
            auto m = evaluate_run(s->run_dir, s->split, /*print_table=*/!s->json, s->perturb);
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
