// mmintent calibrate RUN_DIR [--split val|test|MANIFEST]
#include "command.h"

#include "mmintent/app/run.h"
#include "mmintent/run/run_directory.h"

#include <iomanip>
#include <iostream>
#include <memory>

namespace mmintent::cli {

Command add_calibrate(CLI::App& app) {
  struct State {
    std::string run_dir, split = "val";
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand(
      "calibrate", "Fit the temperature of a finished run post hoc (calibration.json) and re-choose the "
                   "thresholds its config chooses on val (oos.json, decision.json)");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train'")->required();
  cmd->add_option("--split", s->split, "val (default), test, or a manifest file to fit on");
  return {cmd, [s]() -> int {
            const auto r = calibrate_run(s->run_dir, s->split);
            std::cout << std::fixed << std::setprecision(4) << "temperature: " << r.fit.temperature
                      << " (fitted on " << s->split << ", " << r.fit.count << " samples"
                      << (r.fit.at_bound ? ", on the search bound" : "") << ")\n"
                      << "ECE: " << r.before.ece << " -> " << r.after.ece << "  NLL: " << r.before.nll
                      << " -> " << r.after.nll << "\n"
                      << "decision thresholds: min_confidence " << r.min_confidence
                      << ", clarify_margin " << r.clarify_margin << "\n";
            if (r.oos_threshold >= 0) std::cout << "out-of-scope threshold: " << r.oos_threshold << "\n";
            std::cout << "wrote " << RunDirectory(s->run_dir).calibration_file().string()
                      << "; run 'mmintent eval' to refresh the reports\n";
            return kOk;
          }};
}

}  // namespace mmintent::cli
