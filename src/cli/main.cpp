// mmintent: train, evaluate and serve multimodal intent classifiers from YAML configs.
// The only place that prints usage and turns errors into exit codes:
//   0 success, 2 usage, 3 config error, 4 data error, 5 checkpoint/run-dir error,
//   6 training diverged (NaN/Inf loss or gradient), 7 multi-process run failed (rendezvous,
//   a collective, another rank stopped), 1 other,
//   130 interrupted (SIGINT/SIGTERM: the last completed epoch's checkpoints are kept).

#include "mmintent/app/logging.h"
#include "mmintent/app/run.h"
#include "mmintent/app/tune.h"
#include "mmintent/core/log.h"
#include "mmintent/config/loader.h"
#include "mmintent/data/importers.h"
#include "mmintent/distributed/process_group.h"
#include "mmintent/training/device.h"
#include "mmintent/error.h"
#include "mmintent/inference/predictor.h"
#include "mmintent/training/interrupt.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <iomanip>
#include <iostream>

namespace {

enum ExitCode { kOk = 0, kOther = 1, kUsage = 2, kConfig = 3, kData = 4, kCheckpoint = 5, kTraining = 6,
               kDistributed = 7, kInterrupted = 130 };

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

int fail(int code, const std::string& message) {
  std::fprintf(stderr, "mmintent: error: %s\n", message.c_str());
  return code;
}

void print_prediction(const mmintent::Prediction& prediction) {
  if (prediction.out_of_scope) std::cout << "out of scope: no supported intent fits this request\n";
  std::cout << "decision: " << mmintent::to_string(prediction.decision);
  if (prediction.candidates.size() == 2) {
    std::cout << " between " << prediction.candidates[0].intent << " and "
              << prediction.candidates[1].intent;
  }
  std::cout << "\n";
  for (const auto& s : prediction.top) {
    std::cout << std::left << std::setw(32) << s.intent << std::fixed << std::setprecision(4)
              << s.probability << "\n";
  }
}

void print_import_summary(const mmintent::ImportSummary& summary, double seconds) {
  std::cout << "imported " << summary.dataset << " into " << summary.out_dir << " in " << std::fixed
            << std::setprecision(2) << seconds << " s\n";
  for (const auto& split : summary.splits) {
    std::cout << "  " << std::left << std::setw(12) << (split.split + ".jsonl") << std::right << std::setw(7)
              << split.records << " records; by " << summary.kind << ":";
    for (const auto& [kind, n] : split.by_kind) std::cout << " " << kind << " " << n;
    std::cout << "\n";
  }
  std::cout << "  labels: " << summary.num_labels << "\n";
  for (const auto& note : summary.notes) std::cout << "  note: " << note << "\n";
  const auto differences = summary.count_differences();
  if (differences.empty()) {
    std::cout << "  matches published counts (";
    for (std::size_t i = 0; i < summary.checks.size(); ++i) {
      std::cout << (i ? "; " : "") << summary.checks[i].what << " " << summary.checks[i].found;
    }
    std::cout << ")\n";
  } else {
    std::cout << "  warning: counts differ from the published ones: ";
    for (std::size_t i = 0; i < differences.size(); ++i) {
      std::cout << (i ? "; " : "") << differences[i].what << ": found " << differences[i].found
                << ", published " << differences[i].published;
    }
    std::cout << "\n";
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
  bool rewrite = false;
  predict->add_flag("--rewrite", rewrite,
                    "Emit the request for the assistant behind as JSON lines (normalised text, decision, "
                    "rendered rewrite template), to stdout for --text, to --out for --manifest");

  // calibrate
  auto* calibrate = app.add_subcommand(
      "calibrate", "Fit the temperature of a finished run post hoc (calibration.json) and re-choose the "
                   "thresholds its config chooses on val (oos.json, decision.json)");
  std::string calibrate_split = "val";
  calibrate->add_option("run_dir", run_dir, "Run directory written by 'train'")->required();
  calibrate->add_option("--split", calibrate_split, "val (default), test, or a manifest file to fit on");

  // tune
  auto* tune = app.add_subcommand("tune", "Update a trained run from a feedback log into a new run directory");
  mmintent::TuneOptions tune_options;
  tune->add_option("run_dir", run_dir, "Run directory written by 'train' (only read)")->required();
  tune->add_option("--feedback", tune_options.feedback, "Feedback log (JSONL: text/image, predicted, reaction, corrected_to)")
      ->required();
  tune->add_option("--out", tune_options.out_dir, "The new run directory")->required();
  tune->add_option("overrides", tune_options.overrides,
                   "Dotted KEY=VALUE overrides of the run's config, e.g. tune.epochs=5 tune.freeze_encoders=true");
  tune->add_flag("--overwrite", tune_options.overwrite, "Allow a non-empty --out directory");

  // import
  auto* import_cmd = app.add_subcommand("import", "Convert a public data set into train/val/test JSONL manifests");
  import_cmd->require_subcommand(1);
  std::string src_dir, out_dir;
  mmintent::Clinc150ImportOptions clinc_options;
  std::string oos_mode = "include";
  auto* import_clinc = import_cmd->add_subcommand("clinc150", "CLINC150: SRC_DIR/data_<variant>.json");
  import_clinc->add_option("src_dir", src_dir, "Folder with the CLINC150 files")->required();
  import_clinc->add_option("out_dir", out_dir, "Where to write train/val/test.jsonl")->required();
  import_clinc->add_option("--variant", clinc_options.variant, "full, small, imbalanced or oos_plus")
      ->check(CLI::IsMember({"full", "small", "imbalanced", "oos_plus"}));
  import_clinc->add_option("--oos", oos_mode, "include (append out-of-scope samples to each split) or exclude")
      ->check(CLI::IsMember({"include", "exclude"}));
  import_clinc->add_option("--oos-label", clinc_options.oos_label, "Label of the out-of-scope samples");
  mmintent::SnipsImportOptions snips_options;
  std::string latin1_mode = "decode", surrogate_mode = "join";
  auto* import_snips = import_cmd->add_subcommand("snips", "SNIPS: SRC_DIR/train_<Intent>_full.json, validate_<Intent>.json");
  import_snips->add_option("src_dir", src_dir, "Folder with the SNIPS files")->required();
  import_snips->add_option("out_dir", out_dir, "Where to write train/val/test.jsonl")->required();
  import_snips->add_option("--latin1", latin1_mode, "Bytes that are not UTF-8: decode (as Latin-1) or error")
      ->check(CLI::IsMember({"decode", "error"}));
  import_snips->add_option("--surrogate-pairs", surrogate_mode,
                           "With --latin1 decode, a CESU-8 surrogate pair: join (one code point) or latin1")
      ->check(CLI::IsMember({"join", "latin1"}));
  import_snips->add_option("--val-per-intent", snips_options.val_per_intent,
                           "Train-file utterances per intent held out as val (the validate files are test)");
  import_snips->add_option("--seed", snips_options.seed, "Seed for choosing the val utterances");
  mmintent::FashionMnistImportOptions fashion_options;
  auto* import_fashion = import_cmd->add_subcommand("fashion-mnist", "Fashion-MNIST: the four *-ubyte.gz files");
  import_fashion->add_option("src_dir", src_dir, "Folder with the gzip IDX files")->required();
  import_fashion->add_option("out_dir", out_dir, "Where to write images/ and train/val/test.jsonl")->required();
  import_fashion->add_option("--val-size", fashion_options.val_size, "Training images held out as val");
  import_fashion->add_option("--seed", fashion_options.seed, "Seed for choosing the val images");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }

  try {
    mmintent::setup_logging("info");
    // Started by torchrun (or with its variables set by hand): one process of several.
    const auto world = mmintent::world_from_env();
    if (world.distributed()) mmintent::setup_logging("info", "", "rank " + std::to_string(world.rank));
    if (world.distributed() && !*train) {
      return fail(kUsage, "only 'train' runs as several processes (WORLD_SIZE=" +
                              std::to_string(world.world_size) + "); run this command once");
    }
    if (*train) {
      mmintent::install_stop_handlers();
      auto config = mmintent::load_config(config_path, overrides);
      mmintent::TrainRunOptions options;
      options.resume = resume;
      if (world.distributed()) {
        config.runtime.device = mmintent::rank_device(config.runtime.device, world.local_rank);
        options.communicator = mmintent::init_process_group(
            world, config.distributed, mmintent::resolve_device(config.runtime.device));
      }
      auto result = mmintent::train_from_config(config, options);
      if (world.rank != 0) {
        std::cout << "rank " << world.rank << " of " << world.world_size
                  << ": done; rank 0 wrote the run directory " << result.run_dir << "\n";
        return kOk;
      }
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
        const auto r = predictor.predict_manifest(manifest, out, top_k, rewrite);
        for (const auto& s : r.skipped) mmintent::log::warn("predict", "skipped " + s);
        std::cout << "wrote " << r.predicted
                  << (rewrite ? " rewritten requests to " : " predictions to ") << out;
        if (!r.skipped.empty()) {
          std::cout << "; " << r.skipped.size()
                    << " record(s) skipped (data.on_bad_sample: skip), each marked there by a "
                       "line with \"skipped\" and listed above";
        }
        std::cout << "\n";
      } else {
        if (text.empty() && image.empty()) return fail(kUsage, "give --text and/or --image, or --manifest");
        const mmintent::PredictInput input{text, image};
        const auto prediction = predictor.predict(input, top_k);
        if (rewrite) {
          std::cout << mmintent::to_json_line(predictor.rewrite(input, prediction),
                                              predictor.rewriter())
                    << "\n";
        } else {
          print_prediction(prediction);
        }
      }
    } else if (*calibrate) {
      const auto r = mmintent::calibrate_run(run_dir, calibrate_split);
      std::cout << std::fixed << std::setprecision(4) << "temperature: " << r.fit.temperature
                << " (fitted on " << calibrate_split << ", " << r.fit.count << " samples"
                << (r.fit.at_bound ? ", on the search bound" : "") << ")\n"
                << "ECE: " << r.before.ece << " -> " << r.after.ece << "  NLL: " << r.before.nll << " -> "
                << r.after.nll << "\n"
                << "decision thresholds: min_confidence " << r.min_confidence << ", clarify_margin "
                << r.clarify_margin << "\n";
      if (r.oos_threshold >= 0) std::cout << "out-of-scope threshold: " << r.oos_threshold << "\n";
      std::cout << "wrote " << run_dir << "/calibration.json; run 'mmintent eval' to refresh the reports\n";
    } else if (*tune) {
      mmintent::install_stop_handlers();
      auto result = mmintent::tune_from_feedback(run_dir, tune_options);
      std::cout << "run directory: " << result.run_dir << "\n";
      for (const auto& [split, m] : result.metrics) {
        std::cout << split << ".accuracy: " << std::fixed << std::setprecision(4) << m.accuracy
                  << "  " << split << ".macro_f1: " << m.macro_f1 << "\n";
      }
    } else if (*import_cmd) {
      const auto start = std::chrono::steady_clock::now();
      mmintent::ImportSummary summary;
      if (*import_clinc) {
        clinc_options.include_oos = oos_mode == "include";
        summary = mmintent::import_clinc150(src_dir, out_dir, clinc_options);
      } else if (*import_snips) {
        snips_options.invalid_utf8 = latin1_mode == "error" ? mmintent::SnipsImportOptions::InvalidUtf8::error
                                                            : mmintent::SnipsImportOptions::InvalidUtf8::decode;
        snips_options.join_surrogate_pairs = surrogate_mode == "join";
        summary = mmintent::import_snips(src_dir, out_dir, snips_options);
      } else {
        summary = mmintent::import_fashion_mnist(src_dir, out_dir, fashion_options);
      }
      print_import_summary(summary,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return kOk;
  } catch (const mmintent::Interrupted& e) {
    return fail(kInterrupted, e.what());
  } catch (const mmintent::ConfigError& e) {
    return fail(kConfig, e.what());
  } catch (const mmintent::DataError& e) {
    return fail(kData, e.what());
  } catch (const mmintent::CheckpointError& e) {
    return fail(kCheckpoint, e.what());
  } catch (const mmintent::TrainingError& e) {
    return fail(kTraining, e.what());
  } catch (const mmintent::DistributedError& e) {
    return fail(kDistributed, e.what());
  } catch (const std::exception& e) {
    return fail(kOther, first_line(e.what()));
  }
}
