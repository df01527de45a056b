// mmintent quantize RUN_DIR --out NEW_RUN_DIR [KEY=VALUE ...] [--latency-samples N] [--overwrite] [--json]
#include "command.h"

#include "mmintent/app/quantize.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>

namespace mmintent::cli {

Command add_quantize(CLI::App& app) {
  struct State {
    QuantizeOptions options;
    bool json = false;
  };
  auto s = std::make_shared<State>();
  auto* cmd = app.add_subcommand(
      "quantize", "Store a finished run's weights as int8 in a new run directory (about 4x smaller; evaluated and "
                  "compared with the float model)");
  cmd->footer(
      "Example:\n  mmintent quantize runs/clinc --out runs/clinc_int8\n"
      "  mmintent quantize runs/clinc --out runs/clinc_int8 eval.splits=[val,test] --json\n"
      "The new run's quantize.json compares it with the float model: file size, figures and agreement per split, "
      "single-request latency. docs/INT8.md says what is quantised and how.");
  cmd->add_option("run", s->options.run, "A finished run directory (only read)")->required();
  cmd->add_option("overrides", s->options.overrides, "Dotted KEY=VALUE overrides of the run's config (not model.* or data.*)");
  cmd->add_option("--out", s->options.out_dir, "The new run directory")->required();
  cmd->add_option("--latency-samples", s->options.latency_samples,
                  "Samples timed one at a time through each model (0: no timing)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--overwrite", s->options.overwrite, "Allow a non-empty --out directory");
  cmd->add_flag("--json", s->json, "Print only a JSON summary on stdout instead of the tables");
  return {cmd, [s]() -> int {
            s->options.print_tables = !s->json;
            const auto r = quantize_run(s->options);
            const double ratio = r.int8_bytes > 0 ? static_cast<double>(r.float_bytes) / static_cast<double>(r.int8_bytes) : 0;
            const double latency_ratio = r.float_latency_ms > 0 ? r.int8_latency_ms / r.float_latency_ms : 0;
            if (s->json) {
              nlohmann::json splits = nlohmann::json::object();
              for (const auto& [split, c] : r.comparison) {
                nlohmann::json f = metrics_json(c.float_metrics), q = metrics_json(c.int8_metrics);
                if (c.has_oos) {
                  f["in_scope_accuracy"] = c.float_in_scope_accuracy;
                  f["oos_recall"] = c.float_oos_recall;
                  q["in_scope_accuracy"] = c.int8_in_scope_accuracy;
                  q["oos_recall"] = c.int8_oos_recall;
                }
                splits[split] = {{"float", f}, {"int8", q}, {"agreement", c.agreement}};
              }
              print_json({{"run_dir", r.run_dir},
                          {"float_bytes", r.float_bytes},
                          {"int8_bytes", r.int8_bytes},
                          {"size_ratio", ratio},
                          {"int8_tensors", r.weights.int8_tensors},
                          {"max_abs_weight_error", r.weights.max_abs_error},
                          {"latency", {{"samples", r.latency_samples},
                                       {"float_ms_median", r.float_latency_ms},
                                       {"int8_ms_median", r.int8_latency_ms},
                                       {"ratio", latency_ratio}}},
                          {"splits", splits}});
              return kOk;
            }
            std::printf("model file: float %lld bytes, int8 %lld bytes (%.2fx smaller; %lld weight matrices as int8)\n",
                        static_cast<long long>(r.float_bytes), static_cast<long long>(r.int8_bytes), ratio,
                        static_cast<long long>(r.weights.int8_tensors));
            if (r.latency_samples > 0) {
              std::printf("latency, one sample at a time (median of %lld): float %.3f ms, int8 %.3f ms (ratio %.2f)\n",
                          static_cast<long long>(r.latency_samples), r.float_latency_ms, r.int8_latency_ms, latency_ratio);
            }
            for (const auto& [split, c] : r.comparison) {
              std::printf("%s: accuracy float %.4f, int8 %.4f", split.c_str(), c.float_metrics.accuracy,
                          c.int8_metrics.accuracy);
              if (c.has_oos) {
                std::printf("; in-scope float %.4f, int8 %.4f; oos recall float %.4f, int8 %.4f",
                            c.float_in_scope_accuracy, c.int8_in_scope_accuracy, c.float_oos_recall, c.int8_oos_recall);
              }
              std::printf("; same answer %.2f%%\n", 100 * c.agreement);
            }
            print_run_summary(r.run_dir, r.metrics);
            return kOk;
          }};
}

}  // namespace mmintent::cli
