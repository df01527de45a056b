#pragma once
// The CLI's commands: each file under commands/ adds one subcommand (its options and what it
// runs); main.cpp parses, dispatches and turns errors into exit codes. A new command is a new
// file here and one line in main.cpp's list.

#include "mmintent/metrics/classification.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <map>
#include <string>

namespace mmintent::cli {

/// Exit codes (docs/CLI.md): the only place they are defined.
enum ExitCode {
  kOk = 0,
  kOther = 1,
  kUsage = 2,
  kConfig = 3,
  kData = 4,
  kCheckpoint = 5,
  kTraining = 6,
  kDistributed = 7,
  kInterrupted = 130
};

/// Prints "mmintent: error: MESSAGE" to stderr and returns `code`.
int fail(int code, const std::string& message);

/// Prints "run directory: DIR" and "SPLIT.accuracy: A  SPLIT.macro_f1: F" per split, as
/// `train` and `tune` end.
void print_run_summary(const std::string& run_dir,
                       const std::map<std::string, ClassificationMetrics>& metrics);

/// --json: a command's summary as one JSON object (the metrics of one split).
nlohmann::json metrics_json(const ClassificationMetrics& m);
/// Prints `summary` as one line of JSON on stdout: with --json, the only thing on stdout.
void print_json(const nlohmann::json& summary);

/// A subcommand as registered: CLI11 owns `app` (the options are bound to the command's own
/// state, captured by `run`).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;  ///< an exit code; errors are thrown
  bool multi_process = false;  ///< may run as one of several processes (torchrun)
};

Command add_train(CLI::App& app);
Command add_config(CLI::App& app);
Command add_eval(CLI::App& app);
Command add_predict(CLI::App& app);
Command add_calibrate(CLI::App& app);
Command add_tune(CLI::App& app);
Command add_merge(CLI::App& app);
Command add_import(CLI::App& app);
Command add_serve(CLI::App& app);
Command add_export(CLI::App& app);
Command add_ensemble(CLI::App& app);
Command add_quantize(CLI::App& app);

}  // namespace mmintent::cli
