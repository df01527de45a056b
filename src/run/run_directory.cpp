// The layout and the parts that need nothing but the standard library: part of the core
// library, so that a LibTorch-only build (the smoke check) writes a run directory's trainer
// files too. Reading and writing the config, labels and tokenizer is in run_parts.cpp.
#include "mmintent/run/run_directory.h"

#include "mmintent/core/digest.h"
#include "mmintent/error.h"

#include <fstream>

namespace mmintent {
namespace fs = std::filesystem;

RunDirectory::RunDirectory(fs::path path) : path_(std::move(path)) {}

fs::path RunDirectory::config_file() const { return path_ / "config.yaml"; }
fs::path RunDirectory::labels_file() const { return path_ / "labels.json"; }
fs::path RunDirectory::tokenizer_file() const { return path_ / "tokenizer.model"; }
fs::path RunDirectory::tokenizer_vocab_file() const { return path_ / "tokenizer.vocab"; }
fs::path RunDirectory::weights_file() const { return path_ / "model.pt"; }
fs::path RunDirectory::adapter_file() const { return path_ / "adapter.pt"; }
fs::path RunDirectory::adapter_manifest() const { return path_ / "adapter.json"; }
fs::path RunDirectory::ensemble_manifest() const { return path_ / "ensemble.json"; }
fs::path RunDirectory::int8_weights_file() const { return path_ / "model.int8.pt"; }
fs::path RunDirectory::quantize_manifest() const { return path_ / "quantize.json"; }
fs::path RunDirectory::best_checkpoint() const { return path_ / "best.pt"; }
fs::path RunDirectory::last_checkpoint() const { return path_ / "last.pt"; }
fs::path RunDirectory::metrics_log() const { return path_ / "metrics.jsonl"; }
fs::path RunDirectory::steps_log() const { return path_ / "steps.jsonl"; }
fs::path RunDirectory::learning_curve_plot() const { return path_ / "learning_curve.png"; }
fs::path RunDirectory::html_report() const { return path_ / "report.html"; }
fs::path RunDirectory::calibration_file() const { return path_ / "calibration.json"; }
fs::path RunDirectory::oos_file() const { return path_ / "oos.json"; }
fs::path RunDirectory::oos_mahalanobis_file() const { return path_ / "oos_mahalanobis.pt"; }
fs::path RunDirectory::decision_file() const { return path_ / "decision.json"; }
fs::path RunDirectory::tune_file() const { return path_ / "tune.json"; }
fs::path RunDirectory::report_file() const { return path_ / "report.json"; }
fs::path RunDirectory::log_file() const { return path_ / "train.log"; }
fs::path RunDirectory::skipped_file(const std::string& split) const {
  return path_ / ("skipped_" + split + ".txt");
}

TrainerFiles RunDirectory::trainer_files() const {
  TrainerFiles f;
  f.best_checkpoint = best_checkpoint().string();
  f.last_checkpoint = last_checkpoint().string();
  f.final_weights = weights_file().string();
  f.metrics_log = metrics_log().string();
  f.steps_log = steps_log().string();
  return f;
}

void RunDirectory::require_config() const {
  std::error_code ec;
  if (!fs::exists(path_, ec)) throw CheckpointError("run directory '" + str() + "' does not exist");
  if (!fs::is_directory(path_, ec)) {
    throw CheckpointError("'" + str() + "' is not a run directory: it is not a directory");
  }
  if (!fs::exists(config_file(), ec)) {
    throw CheckpointError("'" + str() + "' is not a run directory: config.yaml is missing (train writes it first)");
  }
}

bool RunDirectory::has_adapter() const {
  std::error_code ec;
  return fs::exists(adapter_manifest(), ec);
}

bool RunDirectory::has_ensemble() const {
  std::error_code ec;
  return fs::exists(ensemble_manifest(), ec);
}

bool RunDirectory::has_int8() const {
  std::error_code ec;
  return fs::exists(int8_weights_file(), ec);
}

fs::path RunDirectory::served_weights_file() const {
  if (has_ensemble()) return ensemble_manifest();
  if (has_adapter()) return adapter_file();
  return has_int8() ? int8_weights_file() : weights_file();
}

void RunDirectory::remove_served_weights() const {
  for (const auto& f : {weights_file(), adapter_file(), adapter_manifest(), ensemble_manifest(), int8_weights_file(),
                        quantize_manifest()}) {
    std::error_code ec;
    fs::remove(f, ec);
  }
}

std::string RunDirectory::weights_digest() const { return sha256_file_hex(served_weights_file()); }

void RunDirectory::require_finished() const {
  require_config();
  for (const auto& f : {labels_file(), served_weights_file()}) {
    std::error_code ec;
    if (!fs::exists(f, ec)) {
      throw CheckpointError("'" + str() + "' is not a finished run directory: " + f.filename().string() +
                            " is missing (did its training stop early? 'mmintent train " +
                            config_file().string() + " --resume auto' continues it)");
    }
  }
}

void RunDirectory::save_skipped(const std::string& split,
                                const std::vector<std::string>& skipped) const {
  const auto file = skipped_file(split);
  if (skipped.empty()) {
    std::error_code ec;
    fs::remove(file, ec);
    return;
  }
  std::string text;
  for (const auto& s : skipped) text += s + "\n";
  write_atomically(file, text);
}

void RunDirectory::write_atomically(const fs::path& file, const std::string& text) const {
  const auto tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw Error("cannot write '" + tmp + "'");
  }
  fs::rename(tmp, file);
}

}  // namespace mmintent
