// mmintent ensemble RUN_DIR RUN_DIR... --out NEW_RUN_DIR [KEY=VALUE ...] [--overwrite] [--json]
#include "command.h"

#include "mmintent/app/ensemble.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>

namespace mmintent::cli {

Command add_ensemble(CLI::App& app) {
  struct State {
    std::vector<std::string> arguments;
    EnsembleOptions options;
    bool json = false;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand(
      "ensemble", "Average the calibrated probabilities of finished runs into a new run directory (evaluated like a trained run)");
  cmd->footer(
      "Example:\n  mmintent ensemble runs/clinc_s42 runs/clinc_s1 runs/clinc_s7 --out runs/clinc_ensemble\n"
      "  mmintent ensemble runs/a runs/b --out runs/ab oos.method=threshold eval.splits=[val,test]\n"
      "An argument with '=' that is not a directory is a dotted KEY=VALUE override of the first member's config.");
  cmd->add_option("runs", s->arguments, "Two or more finished run directories (only read), then any KEY=VALUE overrides")
      ->required();
  cmd->add_option("--out", s->options.out_dir, "The new run directory")->required();
  cmd->add_flag("--overwrite", s->options.overwrite, "Allow a non-empty --out directory");
  cmd->add_flag("--json", s->json, "Print only a JSON summary on stdout instead of the tables");
  return {cmd, [s]() -> int {
            for (const auto& a : s->arguments) {
              std::error_code ec;
              const bool override_like = a.find('=') != std::string::npos && !std::filesystem::is_directory(a, ec);
              (override_like ? s->options.overrides : s->options.members).push_back(a);
            }
            s->options.print_tables = !s->json;
            const auto result = make_ensemble(s->options);
            if (s->json) {
              nlohmann::json metrics = nlohmann::json::object();
              for (const auto& [split, m] : result.metrics) metrics[split] = metrics_json(m);
              print_json({{"run_dir", result.run_dir}, {"members", s->options.members}, {"metrics", metrics}});
              return kOk;
            }
            print_run_summary(result.run_dir, result.metrics);
            return kOk;
          }};
}

}  // namespace mmintent::cli
