// mmintent calibrate RUN_DIR [--split val|test|MANIFEST] [--oos-share X | --oos-share-from MANIFEST]
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
    OosShareOptions share;
    bool json = false;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand(
      "calibrate", "Fit the calibration of a finished run post hoc (calibration.json) and re-choose the "
                   "thresholds its config chooses on val (oos.json, decision.json)");
  cmd->footer("Example:\n  mmintent calibrate runs/demo --split val\n"
              "  mmintent calibrate runs/clinc150 --oos-share-from logs/today.jsonl   # calibration.method: split");
  cmd->add_option("run_dir", s->run_dir, "Run directory written by 'train'")->required();
  cmd->add_option("--split", s->split, "val, test, or a manifest file to fit on")->capture_default_str();
  auto* share = cmd->add_option("--oos-share", s->share.share,
                                "calibration.method split: the out-of-scope share of the traffic served, in (0, 1) "
                                "(default: calibration.oos_share, else the fitting split's)");
  cmd->add_option("--oos-share-from", s->share.estimate_from,
                  "calibration.method split: estimate the out-of-scope share on this manifest's samples "
                  "(unlabelled traffic; labels are not read)")
      ->excludes(share);
  cmd->add_flag("--json", s->json, "Print only a JSON summary on stdout");
  return {cmd, [s]() -> int {
            const auto r = calibrate_run(s->run_dir, s->split, true, s->share);
            const auto file = RunDirectory(s->run_dir).calibration_file().string();
            if (s->json) {
              nlohmann::json summary = {
                  {"run_dir", s->run_dir},          {"split", s->split}, {"method", r.method},
                  {"temperature", r.fit.temperature}, {"samples", r.fit.count},
                  {"at_bound", r.fit.at_bound},     {"ece_before", r.before.ece},
                  {"ece_after", r.after.ece},       {"nll_before", r.before.nll},
                  {"nll_after", r.after.nll},       {"min_confidence", r.min_confidence},
                  {"clarify_margin", r.clarify_margin}, {"calibration_file", file}};
              if (r.method == "split") {
                summary["split"] = {{"in_scope_temperature", r.split.in_scope_temperature},
                                    {"slope", r.split.slope},
                                    {"intercept", r.split.intercept},
                                    {"fitted_share", r.split.fitted_share},
                                    {"share", r.split.share},
                                    {"share_from", r.split.share_from}};
              }
              if (!r.oos_score.empty()) {
                summary["oos_score"] = r.oos_score;
                summary["oos_threshold"] = r.oos_threshold;
              }
              print_json(summary);
              return kOk;
            }
            std::cout << std::fixed << std::setprecision(4);
            if (r.method == "split") {
              std::cout << "split calibration (fitted on " << s->split << ", " << r.split.count << " samples, "
                        << r.split.oos_count << " out of scope): in-scope temperature " << r.split.in_scope_temperature
                        << ", P(out of scope) = sigmoid(" << r.split.slope << " * log-odds + " << r.split.intercept
                        << "), out-of-scope share " << r.split.fitted_share << " -> " << r.split.share << " ("
                        << r.split.share_from << ")\n";
            } else {
              std::cout << "temperature: " << r.fit.temperature << " (fitted on " << s->split << ", " << r.fit.count
                        << " samples" << (r.fit.at_bound ? ", on the search bound" : "") << ")\n";
            }
            std::cout << "ECE: " << r.before.ece << " -> " << r.after.ece << "  NLL: " << r.before.nll
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
