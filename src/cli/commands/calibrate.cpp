// mmintent calibrate RUN_DIR [--split val|test|MANIFEST]
#include "command.h"

#include "mmintent/app/run.h"
#include "mmintent/run/run_directory.h"

#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>
#include <memory>

namespace mmintent::cli {

Command add_calibrate(CLI::App& app) {
  struct State {
    std::string run_dir, split = "val";
    bool json = false;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand(
      "calibrate", "Fit the temperature of a finished run post hoc (calibration.json) and re-choose the "
                   "thresholds its config chooses on val (oos.json, decision.json)");
  cmd->footer("Example:\n  mmintent calibrate runs/demo --split val");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train'")->required();
  cmd->add_option("--split", s->split, "val, test, or a manifest file to fit on")->capture_default_str();
  cmd->add_flag("--json", s->json, "Print only a JSON summary on stdout");
  return {cmd, [s]() -> int {
            const auto r = calibrate_run(s->run_dir, s->split);
            const auto file = RunDirectory(s->run_dir).calibration_file().string();
            if (s->json) {
              nlohmann::json summary = {
                  {"run_dir", s->run_dir},          {"split", s->split},
                  {"temperature", r.fit.temperature}, {"samples", r.fit.count},
                  {"at_bound", r.fit.at_bound},     {"ece_before", r.before.ece},
                  {"ece_after", r.after.ece},       {"nll_before", r.before.nll},
                  {"nll_after", r.after.nll},       {"min_confidence", r.min_confidence},
                  {"clarify_margin", r.clarify_margin}, {"calibration_file", file}};
              if (!r.oos_score.empty()) {
                summary["oos_score"] = r.oos_score;
                summary["oos_threshold"] = r.oos_threshold;
              }
              print_json(summary);
              return kOk;
            }
            std::cout << std::fixed << std::setprecision(4) << "temperature: " << r.fit.temperature
                      << " (fitted on " << s->split << ", " << r.fit.count << " samples"
                      << (r.fit.at_bound ? ", on the search bound" : "") << ")\n"
                      << "ECE: " << r.before.ece << " -> " << r.after.ece << "  NLL: " << r.before.nll
                      << " -> " << r.after.nll << "\n"
                      << "decision thresholds: min_confidence " << r.min_confidence
                      << ", clarify_margin " << r.clarify_margin << "\n";
            if (!r.oos_score.empty()) {
              std::cout << "out-of-scope threshold: " << r.oos_threshold << " (" << r.oos_score << " score)\n";
            }
            std::cout << "wrote " << file
                      << "; run 'mmintent eval' to refresh the reports\n";
            return kOk;
          }};
}

}  // namespace mmintent::cli
