// mmintent: train, evaluate and serve multimodal intent classifiers from YAML configs.
// The only place that prints usage and turns errors into exit codes:
//   0 success, 2 usage, 3 config error, 4 data error, 5 checkpoint/run-dir error, 1 other.

#include "mmintent/app/logging.h"
#include "mmintent/app/run.h"
#include "mmintent/config/loader.h"
#include "mmintent/error.h"
#include "mmintent/inference/predictor.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iomanip>
#include <iostream>

namespace {

enum ExitCode { kOk = 0, kOther = 1, kUsage = 2, kConfig = 3, kData = 4, kCheckpoint = 5 };

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

int fail(int code, const std::string& message) {
  std::fprintf(stderr, "mmintent: error: %s\n", message.c_str());
  return code;
}

void print_scores(const std::vector<mmintent::IntentScore>& scores) {
  for (const auto& s : scores) {
    std::cout << std::left << std::setw(32) << s.intent << std::fixed << std::setprecision(4)
              << s.probability << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mmintent: multimodal (text + image) intent classification with LibTorch"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every command");

  // train
  auto* train = app.add_subcommand("train", "Train (and evaluate) a model from a YAML config");
  std::string config_path, resume;
  std::vector<std::string> overrides;
  train->add_option("config", config_path, "YAML config file")->required()->check(CLI::ExistingFile);
  train->add_option("overrides", overrides,
                    "Dotted KEY=VALUE overrides, e.g. train.optimizer.lr=3e-4 model.text_encoder.type=gru");
  train->add_option("--resume", resume, "Resume from a checkpoint path, or 'auto' for output.dir/last.pt");

  // config
  auto* config_cmd = app.add_subcommand("config", "Check a config and print the effective config");
  config_cmd->add_option("config", config_path, "YAML config file")->required();
  config_cmd->add_option("overrides", overrides, "Dotted KEY=VALUE overrides");

  // eval
  auto* eval = app.add_subcommand("eval", "Evaluate a finished run on a split or a manifest");
  std::string run_dir, split = "test";
  eval->add_option("run_dir", run_dir, "Run directory written by 'train'")->required();
  eval->add_option("--split", split, "test, val, or a manifest file");

  // predict
  auto* predict = app.add_subcommand("predict", "Top-k intents for a text and/or image, or a manifest");
  std::string text, image, manifest, out, device = "cpu";
  int64_t top_k = 3;
  predict->add_option("run_dir", run_dir, "Run directory written by 'train'")->required();
  predict->add_option("--text", text, "The message text");
  predict->add_option("--image", image, "Path of the photo");
  predict->add_option("--manifest", manifest, "Predict every record of this manifest...");
  predict->add_option("--out", out, "...into this JSONL file");
  predict->add_option("--top-k", top_k, "How many intents to list")->check(CLI::PositiveNumber);
  predict->add_option("--device", device, "auto, cpu, cuda or cuda:N");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }

  try {
    mmintent::setup_logging("info");
    if (*train) {
      auto config = mmintent::load_config(config_path, overrides);
      mmintent::TrainRunOptions options;
      options.resume = resume;
      auto result = mmintent::train_from_config(config, options);
      std::cout << "run directory: " << result.run_dir << "\n";
      for (const auto& [split, m] : result.metrics) {
        std::cout << split << ".accuracy: " << std::fixed << std::setprecision(4) << m.accuracy
                  << "  " << split << ".macro_f1: " << m.macro_f1 << "\n";
      }
    } else if (*config_cmd) {
      std::cout << mmintent::to_yaml(mmintent::load_config(config_path, overrides));
    } else if (*eval) {
      auto m = mmintent::evaluate_run(run_dir, split);
      std::cout << "accuracy: " << std::fixed << std::setprecision(4) << m.accuracy
                << "  macro_f1: " << m.macro_f1 << "\n";
    } else if (*predict) {
      mmintent::PredictorOptions po;
      po.device = device;
      auto predictor = mmintent::Predictor::load(run_dir, po);
      if (!manifest.empty()) {
        if (out.empty()) return fail(kUsage, "--manifest needs --out FILE");
        const auto n = predictor.predict_manifest(manifest, out, top_k);
        std::cout << "wrote " << n << " predictions to " << out << "\n";
      } else {
        if (text.empty() && image.empty()) return fail(kUsage, "give --text and/or --image, or --manifest");
        print_scores(predictor.predict({text, image}, top_k));
      }
    }
    return kOk;
  } catch (const mmintent::ConfigError& e) {
    return fail(kConfig, e.what());
  } catch (const mmintent::DataError& e) {
    return fail(kData, e.what());
  } catch (const mmintent::CheckpointError& e) {
    return fail(kCheckpoint, e.what());
  } catch (const std::exception& e) {
    return fail(kOther, first_line(e.what()));
  }
}
