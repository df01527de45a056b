// mmintent: train, evaluate and serve multimodal intent classifiers from YAML configs.
// The only place that prints usage and turns errors into exit codes (command.h):
//   0 success, 2 usage, 3 config error, 4 data error, 5 checkpoint/run-dir error,
//   6 training diverged (NaN/Inf loss or gradient), 7 multi-process run failed (rendezvous,
//   a collective, another rank stopped), 1 other,
//   130 interrupted (SIGINT/SIGTERM: the last completed epoch's checkpoints are kept).
// Each command is its own file under commands/.

#include "command.h"

#include "mmintent/app/logging.h"
#include "mmintent/distributed/process_group.h"
#include "mmintent/error.h"
#include "mmintent/training/interrupt.h"

#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/version.h>

#include <dlfcn.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <vector>

namespace mmintent::cli {

int fail(int code, const std::string& message) {
  std::fprintf(stderr, "mmintent: error: %s\n", message.c_str());
  return code;
}

void print_run_summary(const std::string& run_dir,
                       const std::map<std::string, ClassificationMetrics>& metrics) {
  std::cout << "run directory: " << run_dir << "\n";
  for (const auto& [split, m] : metrics) {
    std::cout << split << ".accuracy: " << std::fixed << std::setprecision(4) << m.accuracy << "  "
              << split << ".macro_f1: " << m.macro_f1 << "\n";
  }
}

nlohmann::json metrics_json(const ClassificationMetrics& m) {
  nlohmann::json top_k = nlohmann::json::object();
  for (const auto& [k, value] : m.top_k) top_k[std::to_string(k)] = value;
  return {{"count", m.count},           {"accuracy", m.accuracy},
          {"macro_precision", m.macro_precision}, {"macro_recall", m.macro_recall},
          {"macro_f1", m.macro_f1},     {"weighted_f1", m.weighted_f1},
          {"top_k", top_k}};
}

void print_json(const nlohmann::json& summary) { std::cout << summary.dump() << std::endl; }

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

/// The BLAS the process calls (the file that provides sgemm_), e.g.
/// /usr/lib/x86_64-linux-gnu/blis-openmp/libblas.so.3; "" when none is loaded.
std::string blas_in_use() {
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info info{};
  if (sgemm == nullptr || dladdr(sgemm, &info) == 0 || info.dli_fname == nullptr) return "";
  char resolved[PATH_MAX];
  return realpath(info.dli_fname, resolved) != nullptr ? resolved : info.dli_fname;
}

/// `mmintent --version`: what a bug report needs.
std::string version_text() {
  std::string text = "mmintent " MMINTENT_VERSION "\nLibTorch " TORCH_VERSION "\n";
  const auto blas = blas_in_use();
  text += "BLAS: " + (blas.empty() ? std::string("none loaded (LibTorch calls no external BLAS)") : blas) + "\n";
  text += torch::cuda::is_available()
              ? "CUDA: available, " + std::to_string(torch::cuda::device_count()) + " device(s)"
              : std::string("CUDA: not available (CPU only)");
  return text;
}

int run(int argc, char** argv) {
  CLI::App app{"mmintent: multimodal (text + image) intent classification with LibTorch"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every command");
  // Every option's default shows in --help (commands inherit this from the app).
  app.option_defaults()->always_capture_default();
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "Console log level: debug, info, warn or error (a run's log file keeps info)")
      ->envname("MMINTENT_LOG_LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.fallthrough();  // --log-level after the command's name works too
  app.set_version_flag("--version", version_text, "Print mmintent's version, LibTorch's, the BLAS in use and CUDA's availability, and exit");
  const std::vector<Command> commands{add_train(app),     add_config(app), add_eval(app),
                                      add_predict(app),   add_calibrate(app), add_tune(app),
                                      add_merge(app),     add_import(app),    add_serve(app),
                                      add_export(app),    add_ensemble(app),  add_quantize(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }

  try {
    set_console_log_level(log_level);
    setup_logging();
    // Started by torchrun (or with its variables set by hand): one process of several.
    const auto world = world_from_env();
    if (world.distributed()) setup_logging("", "", "rank " + std::to_string(world.rank));
    for (const auto& command : commands) {
      if (!*command.app) continue;
      if (world.distributed() && !command.multi_process) {
        return fail(kUsage, "only 'train' runs as several processes (WORLD_SIZE=" +
                                std::to_string(world.world_size) + "); run this command once");
      }
      return command.run();
    }
    return kOk;
  } catch (const Interrupted& e) {
    return fail(kInterrupted, e.what());
  } catch (const ConfigError& e) {
    return fail(kConfig, e.what());
  } catch (const DataError& e) {
    return fail(kData, e.what());
  } catch (const CheckpointError& e) {
    return fail(kCheckpoint, e.what());
  } catch (const TrainingError& e) {
    return fail(kTraining, e.what());
  } catch (const DistributedError& e) {
    return fail(kDistributed, e.what());
  } catch (const std::exception& e) {
    return fail(kOther, first_line(e.what()));
  }
}

}  // namespace
}  // namespace mmintent::cli

int main(int argc, char** argv) { return mmintent::cli::run(argc, argv); }
