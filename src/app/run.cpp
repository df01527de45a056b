#include "mmintent/app/run.h"

#include "mmintent/app/logging.h"
#include "mmintent/config/loader.h"
#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/evaluation/calibration.h"
#include "mmintent/evaluation/out_of_scope.h"
#include "mmintent/evaluation/predictions.h"
#include "mmintent/evaluation/report.h"
#include "mmintent/inference/decision.h"
#include "mmintent/inference/rewrite.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/device.h"
#include "mmintent/training/optimization.h"

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace mmintent {
namespace fs = std::filesystem;

ManifestReadOptions manifest_read_options(const Config& c, bool require_label) {
  ManifestReadOptions o;
  o.format = parse_manifest_format(c.data.format);
  o.fields = c.data.fields;
  if (!c.model.uses("text")) o.fields.text.clear();
  if (!c.model.uses("image")) o.fields.image.clear();
  o.require_label = require_label;
  o.allow_missing_text = c.data.allow_missing_text;
  o.allow_missing_image = c.data.allow_missing_image;
  o.on_bad_record = c.data.on_bad_sample;
  return o;
}

DatasetOptions dataset_options(const Config& c) {
  DatasetOptions o;
  o.use_text = c.model.uses("text");
  o.use_image = c.model.uses("image");
  o.image = c.data.image;
  o.max_length = c.data.text.max_length;
  o.cache_images = c.data.cache_images;
  o.unknown_labels = c.data.unknown_labels;
  o.on_bad_sample = c.data.on_bad_sample;
  o.threads = std::max<int64_t>(1, c.data.loader.num_workers);
  if (!c.oos.label.empty() && c.oos.method == "threshold") o.extra_label = c.oos.label;
  return o;
}

void configure_runtime(const Config& c) {
  cv::setNumThreads(0);
  configure_allocator(c.runtime.keep_freed_memory);
  const int threads = configure_threads(static_cast<int>(c.runtime.threads));
  const auto cores = std::max(1u, std::thread::hardware_concurrency());
  log::info("runtime", "LibTorch intra-op threads: " + std::to_string(threads) +
                           ", loader workers: " + std::to_string(c.data.loader.num_workers) +
                           ", cores: " + std::to_string(cores));
  if (static_cast<unsigned>(threads) > cores) {
    log::warn("runtime", "more LibTorch threads than cores: expect slowdowns");
  }
}

namespace {

/// Logs the samples of `d` that were skipped (data.on_bad_sample / data.unknown_labels: skip),
/// each by file and line; at most `max_listed` of them, then how many more.
void report_skipped(const MultimodalDataset& d, std::size_t max_listed = SIZE_MAX) {
  if (d.skipped().empty()) return;
  log::warn("data", std::to_string(d.skipped().size()) + " sample(s) of " + d.path() + " skipped:");
  for (std::size_t i = 0; i < d.skipped().size() && i < max_listed; ++i) {
    log::warn("data", "  skipped " + d.skipped()[i]);
  }
  if (d.skipped().size() > max_listed) {
    log::warn("data", "  ... and " + std::to_string(d.skipped().size() - max_listed) +
                          " more, all listed at the end and in the run directory");
  }
}

/// Writes the skipped samples of `d` ("file:line: reason", one a line) to `file` (temp file +
/// rename); removes a stale `file` when none was skipped.
void save_skipped(const MultimodalDataset& d, const fs::path& file) {
  std::error_code ec;
  if (d.skipped().empty()) {
    fs::remove(file, ec);
    return;
  }
  const auto tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& s : d.skipped()) out << s << "\n";
    if (!out) throw Error("cannot write '" + tmp + "'");
  }
  fs::rename(tmp, file);
}

std::vector<SampleInfo> sample_infos(const MultimodalDataset& d) {
  std::vector<SampleInfo> out;
  out.reserve(d.size());
  for (const auto& r : d.records()) out.push_back({r.text, r.image});
  return out;
}

/// Checks that `dir` can serve as a run directory; with `create`, makes it and probes a write.
void check_run_dir(const fs::path& dir, bool must_be_empty, bool create) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw ConfigError("", "output.dir", 0, "'" + dir.string() + "' exists and is not a directory");
  }
  if (must_be_empty && fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    throw ConfigError("", "output.dir", 0,
                      "run directory '" + dir.string() +
                          "' is not empty; choose another output.dir, set output.overwrite=true, "
                          "or resume with --resume auto");
  }
  if (!create) {
    // Nothing is created yet, but a directory that could never be made or written is refused
    // now, before the tokenizer is trained or any image decoded.
    auto existing = fs::absolute(dir, ec);
    while (!existing.empty() && !fs::exists(existing, ec) && existing != existing.parent_path()) {
      existing = existing.parent_path();
    }
    if (!fs::is_directory(existing, ec)) {
      throw ConfigError("", "output.dir", 0,
                        "cannot create run directory '" + dir.string() + "': '" +
                            existing.string() + "' is not a directory");
    }
    if (::access(existing.c_str(), W_OK | X_OK) != 0) {
      throw ConfigError("", "output.dir", 0,
                        "cannot create run directory '" + dir.string() + "': '" +
                            existing.string() + "' is not writable (" + std::strerror(errno) + ")");
    }
    return;
  }
  fs::create_directories(dir, ec);
  if (ec) {
    throw ConfigError("", "output.dir", 0, "cannot create run directory '" + dir.string() + "': " + ec.message());
  }
  const auto probe = dir / ".write_test";
  std::ofstream out(probe);
  if (!out) throw ConfigError("", "output.dir", 0, "run directory '" + dir.string() + "' is not writable");
  out.close();
  fs::remove(probe, ec);
}

/// A temporary folder removed with everything in it when the object dies.
class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("mmintent_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// How a run recognises out-of-scope samples: from the config, and for the threshold method
/// the threshold (given, or chosen on the validation split).
struct OosSetup {
  bool enabled = false;
  bool threshold_method = false;
  std::string label;
  int64_t index = -1;     ///< class index of out-of-scope samples among the gold labels
  double threshold = -1;  ///< threshold method only
};

OosSetup oos_setup(const Config& c, const LabelMap& labels) {
  OosSetup o;
  if (c.oos.label.empty()) return o;
  o.enabled = true;
  o.label = c.oos.label;
  o.threshold_method = c.oos.method == "threshold";
  o.threshold = c.oos.threshold;
  if (o.threshold_method) {
    o.index = labels.size();  // not a trained class: one past the model's classes
  } else {
    o.index = labels.find(o.label);
    if (o.index < 0) {
      throw ConfigError(c.source, "oos.label", 0,
                        "'" + o.label + "' is not among the training labels (method: class needs "
                        "out-of-scope samples in the training split)");
    }
  }
  return o;
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const auto c = t.to(torch::kCPU, torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

/// Merges `value` into report.json under report[split][key] (temp file + rename).
void merge_report(const fs::path& run_dir, const std::string& split, const std::string& key,
                  const nlohmann::json& value) {
  const auto path = run_dir / "report.json";
  nlohmann::json report = nlohmann::json::object();
  if (std::ifstream in(path); in) report = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!report.is_object()) throw Error("cannot update '" + path.string() + "': not a JSON object");
  report[split][key] = value;
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << report.dump(2) << "\n";
    if (!out) throw Error("cannot write '" + tmp + "'");
  }
  fs::rename(tmp, path);
}

/// Chooses the out-of-scope threshold on the (calibrated) validation predictions; save_oos
/// records it in oos.json.
void choose_threshold(const Predictions& val, const Config& c, OosSetup& oos) {
  if (!oos.threshold_method || c.oos.threshold >= 0) return;
  if (!val.probs.defined()) {
    throw ConfigError(c.source, "oos.threshold", 0, "choosing the threshold needs data.val");
  }
  oos.threshold = choose_oos_threshold(val.probs, to_vector(val.labels), oos.index);
  log::info("eval", "out-of-scope threshold chosen on the validation split: " + std::to_string(oos.threshold));
}

void save_oos(const fs::path& run_dir, const OosSetup& oos) {
  if (!oos.enabled) return;
  nlohmann::json j{{"label", oos.label}, {"method", oos.threshold_method ? "threshold" : "class"}};
  if (oos.threshold_method) j["threshold"] = oos.threshold;
  std::ofstream(run_dir / "oos.json") << j.dump(2) << "\n";
}

// ---- Calibration, decision thresholds and the rewrite check (calibration.json, decision.json).

std::vector<double> to_doubles(const at::Tensor& t) {
  const auto c = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

/// probs [N,K] scaled by temperature T (softmax(log p / T)); T = 1 leaves them as they are.
at::Tensor calibrated(const at::Tensor& probs, double temperature) {
  if (!probs.defined() || temperature == 1.0) return probs;
  const auto out = softmax_with_temperature(logits_from_probabilities(to_doubles(probs)),
                                            probs.size(1), temperature);
  return torch::tensor(out, torch::kDouble)
      .reshape({probs.size(0), probs.size(1)})
      .to(torch::kFloat);
}

int64_t oos_class(const OosSetup& oos) {
  return oos.enabled && !oos.threshold_method ? oos.index : -1;
}

std::vector<DecisionSample> samples_of(const Predictions& p, const OosSetup& oos) {
  if (!p.probs.defined()) return {};
  return decision_samples(to_doubles(p.probs), p.probs.size(1), to_vector(p.labels), oos_class(oos),
                          oos.threshold_method ? oos.threshold : -1.0);
}

void save_decision(const fs::path& run_dir, const ServingSetup& s, const ChosenThresholds& chosen) {
  nlohmann::json j{{"min_confidence", s.thresholds.min_confidence},
                   {"clarify_margin", s.thresholds.clarify_margin},
                   {"target_precision", s.decision.target_precision},
                   {"chosen_on_val",
                    {{"min_confidence", chosen.min_confidence_chosen},
                     {"clarify_margin", chosen.clarify_margin_chosen}}},
                   {"target_reached",
                    {{"min_confidence", chosen.min_confidence_reached},
                     {"clarify_margin", chosen.clarify_margin_reached}}}};
  const auto path = run_dir / "decision.json", tmp = run_dir / "decision.json.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) throw Error("cannot write '" + tmp.string() + "'");
  }
  fs::rename(tmp, path);
}

/// Fits what a run serves on the validation predictions `val` (raw probabilities): the
/// temperature (calibration.json, when `fit_temperature_too`), then on the calibrated
/// probabilities the out-of-scope threshold (when chosen) and the decision thresholds
/// (decision.json). Without val: T = 1 and the configured thresholds.
ServingSetup fit_serving(const Predictions& val, const Config& c, const fs::path& run_dir,
                         const std::string& fitted_on, bool fit_temperature_too, OosSetup& oos) {
  ServingSetup s;
  s.decision = c.decision;
  if (val.probs.defined() && fit_temperature_too) {
    const auto logits = logits_from_probabilities(to_doubles(val.probs));
    const auto fit = fit_temperature(logits, val.probs.size(1), to_vector(val.labels));
    s.calibration_method = "temperature";
    s.temperature = fit.temperature;
    save_calibration(run_dir.string(),
                     CalibrationFile{"temperature", fit.temperature, fitted_on, fit});
    log::info("calibration", "temperature " + std::to_string(fit.temperature) + " fitted on " +
                                 fitted_on + " (" + std::to_string(fit.count) + " samples): NLL " +
                                 std::to_string(fit.nll_before) + " -> " +
                                 std::to_string(fit.nll_after));
    if (fit.at_bound) {
      log::warn(
          "calibration",
          "the temperature lies on the search bound: the fitting split is (nearly) separable");
    }
  } else if (fit_temperature_too) {
    log::info("calibration", "no validation split: probabilities stay uncalibrated (T = 1)");
  }
  Predictions cal = val;
  cal.probs = calibrated(val.probs, s.temperature);
  choose_threshold(cal, c, oos);
  const auto chosen = choose_decision_thresholds(samples_of(cal, oos), c.decision);
  s.thresholds = chosen.thresholds;
  for (const auto& [key, was_chosen, reached, value] :
       {std::tuple{"min_confidence", chosen.min_confidence_chosen, chosen.min_confidence_reached,
                   s.thresholds.min_confidence},
        std::tuple{"clarify_margin", chosen.clarify_margin_chosen, chosen.clarify_margin_reached,
                   s.thresholds.clarify_margin}}) {
    if (!was_chosen) continue;
    log::info("decision",
              std::string(key) + " chosen on the validation split: " + std::to_string(value));
    if (!reached) {
      log::warn("decision", std::string(key) + ": no value reaches target_precision " +
                                std::to_string(c.decision.target_precision) +
                                " on val; took the most precise");
    }
  }
  save_decision(run_dir, s, chosen);
  return s;
}

/// The class each row is served as: the arg-max, or `oos.index` where the threshold rejects it.
std::vector<int64_t> served_classes(const at::Tensor& probs, const OosSetup& oos) {
  if (oos.threshold_method) return threshold_decisions(probs, oos.threshold, oos.index);
  return to_vector(probs.argmax(1));
}

/// Re-scores the normalised texts of `dataset` and compares the served intents with
/// `before` (indexed like the dataset's records).
RewriteCheck check_rewrite(IntentClassifier& model, const Config& c, const RunData& data,
                           const MultimodalDataset& dataset, const c10::Device& device,
                           const std::vector<int64_t>& before, const ServingSetup& s,
                           const OosSetup& oos, const std::vector<std::string>& names) {
  RewriteCheck check;
  const TextNormalizer normalise(c.rewrite.fillers);
  Manifest m;
  m.path = dataset.path();
  std::vector<std::string> normalised;
  for (const auto& r : dataset.records()) {
    Record x = r;
    x.text = normalise(r.text);
    normalised.push_back(x.text);
    check.normalised_differs += x.text != r.text;
    if (x.text.empty() && !r.text.empty()) x.text = r.text;  // scored as changed below
    m.records.push_back(std::move(x));
  }
  auto rewritten = std::make_shared<MultimodalDataset>(std::move(m), &data.labels, data.tokenizer,
                                                       dataset_options(c));
  auto loader = make_loader(c, rewritten, /*training=*/false);
  auto p = collect_predictions(model, *loader, device, parse_precision(c.runtime.precision));
  if (!p.probs.defined()) return check;
  const auto after = served_classes(calibrated(p.probs, s.temperature), oos);
  const auto index = to_vector(p.indices);
  auto name_of = [&](int64_t k) {
    return k >= 0 && k < static_cast<int64_t>(names.size()) ? names[k] : std::string("?");
  };
  for (size_t i = 0; i < after.size(); ++i) {
    const auto row = static_cast<size_t>(index[i]);
    const auto& original = dataset.records()[row].text;
    const bool emptied = normalised[row].empty() && !original.empty();
    ++check.count;
    if (!emptied && after[i] == before[row]) {
      ++check.unchanged;
    } else {
      check.changes.push_back({original, normalised[row], name_of(before[row]),
                               emptied ? "(empty text)" : name_of(after[i])});
    }
  }
  return check;
}

ClassificationMetrics evaluate_split(IntentClassifier& model, const Config& c, const RunData& data,
                                     const std::shared_ptr<const MultimodalDataset>& dataset,
                                     const std::string& name, const std::string& run_dir,
                                     const c10::Device& device, bool print_table,
                                     const OosSetup& oos, const ServingSetup& serving) {
  auto loader = make_loader(c, dataset, /*training=*/false);
  auto predictions = collect_predictions(model, *loader, device, parse_precision(c.runtime.precision));
  // Calibrated probabilities from here on: what the Predictor serves.
  CalibrationReport calibration;
  if (predictions.probs.defined()) {
    const auto labels = to_vector(predictions.labels);
    const int64_t k = predictions.probs.size(1);
    calibration.method = serving.calibration_method;
    calibration.temperature = serving.temperature;
    calibration.before = calibration_metrics(to_doubles(predictions.probs), k, labels);
    const auto raw = predictions.probs;
    predictions.probs = calibrated(predictions.probs, serving.temperature);
    calibration.after = calibration_metrics(to_doubles(predictions.probs), k, labels);
    if (oos_class(oos) >= 0) {  // out-of-scope samples marked as no class: in-scope only
      auto in_scope = labels;
      for (auto& y : in_scope) y = y == oos.index ? -1 : y;
      calibration.has_in_scope = true;
      calibration.in_scope_before = calibration_metrics(to_doubles(raw), k, in_scope);
      calibration.in_scope_after = calibration_metrics(to_doubles(predictions.probs), k, in_scope);
    }
  }
  const auto decision_samples_of_split = samples_of(predictions, oos);
  std::vector<int64_t> served_by_index;  // served class per record, for the rewrite check
  if (predictions.probs.defined()) {
    const auto served = served_classes(predictions.probs, oos);
    const auto index = to_vector(predictions.indices);
    served_by_index.assign(static_cast<size_t>(dataset->size()), -1);
    for (size_t i = 0; i < served.size(); ++i) {
      served_by_index[static_cast<size_t>(index[i])] = served[i];
    }
  }
  auto names = data.labels.names();
  if (oos.threshold_method && predictions.probs.defined()) {
    // Rejections become a class of their own: an extra column that is 1 where the top
    // probability is under the threshold, so reports, confusion matrix and top-k show them.
    const auto top = std::get<0>(predictions.probs.max(1));
    const auto rejected = top.lt(oos.threshold).to(torch::kFloat).unsqueeze(1);
    predictions.probs = torch::cat({predictions.probs * (1 - rejected), rejected}, 1);
    names.push_back(oos.label);
  }
  SplitReportOptions ro;
  ro.top_ks = c.eval.top_k;
  ro.listed_top = c.eval.listed_top;
  ro.plots = c.eval.plots;
  auto metrics = write_split_report(run_dir, name, predictions, names, sample_infos(*dataset), ro);
  if (print_table) std::cout << format_metrics_table(name, metrics, names) << std::flush;
  if (oos.enabled && predictions.probs.defined()) {
    const auto om = oos_metrics(to_vector(predictions.probs.argmax(1)), to_vector(predictions.labels), oos.index);
    nlohmann::json j{{"label", oos.label},
                     {"method", oos.threshold_method ? "threshold" : "class"},
                     {"in_scope_count", om.in_scope_count},
                     {"oos_count", om.oos_count},
                     {"in_scope_accuracy", om.in_scope_accuracy},
                     {"oos_recall", om.oos_recall},
                     {"oos_precision", om.oos_precision},
                     {"oos_f1", om.oos_f1}};
    if (oos.threshold_method) j["threshold"] = oos.threshold;
    merge_report(run_dir, name, "oos", j);
    if (print_table) {
      std::printf("%s out-of-scope (%s%s): in-scope accuracy %.4f, oos recall %.4f, oos precision %.4f\n",
                  name.c_str(), oos.threshold_method ? "threshold " : "class",
                  oos.threshold_method ? std::to_string(oos.threshold).c_str() : "",
                  om.in_scope_accuracy, om.oos_recall, om.oos_precision);
    }
  }
  write_calibration_report(run_dir, name, calibration, c.eval.plots);
  DecisionReport dr;
  dr.thresholds = serving.thresholds;
  dr.options = serving.decision;
  dr.stats = decision_stats(decision_samples_of_split, serving.thresholds);
  dr.curve = coverage_curve(decision_samples_of_split);
  write_decision_report(run_dir, name, dr, c.eval.plots);
  if (print_table && predictions.probs.defined()) {
    std::printf("%s calibration (%s, T = %.4f): ECE %.4f -> %.4f, NLL %.4f -> %.4f\n", name.c_str(),
                calibration.method.c_str(), calibration.temperature, calibration.before.ece,
                calibration.after.ece, calibration.before.nll, calibration.after.nll);
    if (calibration.has_in_scope) {
      std::printf("%s calibration, in-scope samples only: ECE %.4f -> %.4f, NLL %.4f -> %.4f\n",
                  name.c_str(), calibration.in_scope_before.ece, calibration.in_scope_after.ece,
                  calibration.in_scope_before.nll, calibration.in_scope_after.nll);
    }
    std::printf(
        "%s decisions (min_confidence %.4f, clarify_margin %.4f): accept %.4f, clarify %.4f, "
        "fallback %.4f; accepted accuracy %.4f\n",
        name.c_str(), serving.thresholds.min_confidence, serving.thresholds.clarify_margin,
        dr.stats.accept_share, dr.stats.clarify_share, dr.stats.fallback_share,
        dr.stats.accepted_accuracy);
  }
  if (c.model.uses("text") && predictions.probs.defined()) {
    const auto check =
        check_rewrite(model, c, data, *dataset, device, served_by_index, serving, oos, names);
    write_rewrite_report(run_dir, name, check);
    if (print_table) {
      std::printf(
          "%s rewriting: intent unchanged for %lld of %lld normalised texts (%.2f%%; %lld texts "
          "changed by the normaliser)\n",
          name.c_str(), static_cast<long long>(check.unchanged),
          static_cast<long long>(check.count),
          check.count ? 100.0 * check.unchanged / check.count : 100.0,
          static_cast<long long>(check.normalised_differs));
    }
  }
  return metrics;
}

RunData load_run_data(const Config& c, const std::string& run_dir) {
  RunData data;
  data.labels = LabelMap::load((fs::path(run_dir) / "labels.json").string());
  if (c.model.uses("text")) {
    data.tokenizer = std::make_shared<Tokenizer>(
        Tokenizer::load((fs::path(run_dir) / "tokenizer.model").string()));
  }
  return data;
}

}  // namespace

std::unique_ptr<DataLoader> make_loader(const Config& c,
                                        std::shared_ptr<const MultimodalDataset> dataset,
                                        bool training, int64_t rank, int64_t world_size) {
  LoaderOptions o;
  o.batch_size = training ? c.data.loader.batch_size : c.data.loader.eval_batch_size;
  o.shuffle = training && c.data.loader.shuffle;
  o.drop_last = training && c.data.loader.drop_last;
  o.num_workers = c.data.loader.num_workers;
  o.prefetch = c.data.loader.prefetch;
  o.seed = static_cast<uint64_t>(c.runtime.seed);
  // Pinned batches make the host-to-GPU copies asynchronous (only with CUDA).
  o.pin_memory = resolve_device(c.runtime.device).is_cuda();
  if (training && c.data.augment.enabled) o.augment = std::make_shared<AugmentOptions>(c.data.augment);
  o.rank = rank;
  o.world_size = world_size;
  return std::make_unique<DataLoader>(std::move(dataset), o);
}

IntentClassifier build_model(const Config& c, const RunData& data) {
  const int64_t vocab = data.tokenizer ? data.tokenizer->vocab_size() : 2;
  return IntentClassifier(c.model_options(vocab, data.labels.size()));
}

TrainRunResult train_from_config(const Config& c, const TrainRunOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  configure_runtime(c);
  const fs::path run_dir = fs::absolute(c.output.dir);
  const bool resuming = !options.resume.empty();
  // Data-parallel: every rank reads and checks the data; rank 0 alone writes.
  Communicator* comm = options.communicator && options.communicator->world_size() > 1
                           ? options.communicator.get() : nullptr;
  const int rank = comm ? comm->rank() : 0;
  const int world_size = comm ? comm->world_size() : 1;
  const bool writer = rank == 0;
  const std::string tag = comm ? "rank " + std::to_string(rank) : "";
  if (!writer) setup_logging("warn", "", tag);  // other ranks: warnings and errors, on stderr only

  // 1. Read and check the data before anything is written.
  RunData data;
  const auto mopts = manifest_read_options(c, /*require_label=*/true);
  Manifest train_manifest = read_manifest(c.data.train, mopts);
  if (!c.oos.label.empty() && c.oos.method == "threshold") {
    // The threshold method trains on in-scope samples only.
    auto& r = train_manifest.records;
    const auto before = r.size();
    r.erase(std::remove_if(r.begin(), r.end(), [&](const Record& x) { return x.label == c.oos.label; }), r.end());
    log::info("data", "left " + std::to_string(before - r.size()) + " out-of-scope ('" + c.oos.label +
                          "') samples out of training (oos.method: threshold)");
  }
  if (train_manifest.records.empty()) {
    const auto& skipped = train_manifest.skipped;
    throw DataError(c.data.train, 0, skipped.empty() ? std::string("the training split is empty")
                                                     : "the training split is empty: all " +
                                                           std::to_string(skipped.size()) +
                                                           " records were skipped, the first: " +
                                                           skipped.front());
  }
  const auto saved_labels = run_dir / "labels.json";
  if (resuming && fs::exists(saved_labels)) {
    data.labels = LabelMap::load(saved_labels.string());  // the resumed run's own class order
  } else if (!c.data.labels.empty()) {
    data.labels = LabelMap::load(c.data.labels);
  } else {
    std::vector<std::string> names;
    for (const auto& r : train_manifest.records) {
      names.push_back(r.label);
      for (const auto& entry : r.soft_label) {  // intents named only in soft labels count too
        const bool untrained_oos = c.oos.method == "threshold" && entry.first == c.oos.label;
        if (!untrained_oos) names.push_back(entry.first);
      }
    }
    data.labels = LabelMap::from_labels(names);
  }
  if (data.labels.size() < 2) {
    throw DataError(c.data.train, 0, "needs at least 2 distinct labels, found " +
                                         std::to_string(data.labels.size()));
  }
  OosSetup oos = oos_setup(c, data.labels);
  Rewriter(c.rewrite, data.labels.names(), c.source);  // rewrite templates name known intents
  Manifest val_manifest, test_manifest;
  if (!c.data.val.empty()) val_manifest = read_manifest(c.data.val, mopts);
  if (!c.data.test.empty()) test_manifest = read_manifest(c.data.test, mopts);

  // 2. Refuse an unusable run directory early, but create nothing yet.
  if (writer) check_run_dir(run_dir, /*must_be_empty=*/!c.output.overwrite && !resuming, /*create=*/false);

  // 3. Tokenizer: reused when resuming, given, or trained on the training texts into a
  //    temporary folder (moved into the run directory once all the data has been checked).
  const auto tok_path = run_dir / "tokenizer.model";
  std::optional<ScratchDir> tok_scratch;
  if (c.model.uses("text") && writer) {
    if (resuming && fs::exists(tok_path)) {
      data.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(tok_path.string()));
    } else if (!c.data.text.tokenizer.empty()) {
      data.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(c.data.text.tokenizer));
    } else {
      std::vector<std::string> texts;
      for (const auto& r : train_manifest.records) texts.push_back(r.text);
      log::info("data", "training a sentencepiece tokenizer (" + c.data.text.train.model_type +
                            ", vocab " + std::to_string(c.data.text.train.vocab_size) + ") on " +
                            std::to_string(texts.size()) + " texts");
      tok_scratch.emplace();
      data.tokenizer = std::make_shared<Tokenizer>(
          Tokenizer::train(texts, (tok_scratch->path() / "tokenizer").string(), c.data.text.train));
    }
  }
  if (c.model.uses("text") && comm) {
    // Every rank tokenises with rank 0's tokenizer (trained, given or resumed), whatever its
    // own host has.
    std::string bytes;
    if (writer) {
      std::ifstream in(data.tokenizer->model_path(), std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    bytes = broadcast_bytes(*comm, bytes, 0);
    if (!writer) {
      tok_scratch.emplace();
      const auto file = tok_scratch->path() / "tokenizer.model";
      std::ofstream(file, std::ios::binary) << bytes;
      data.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(file.string()));
    }
  }

  // 4. Datasets: labels checked, texts tokenised, images decoded once.
  auto dopts = dataset_options(c);
  dopts.check_images = true;  // without the cache too: bad images are found before training
  data.train = std::make_shared<MultimodalDataset>(std::move(train_manifest), &data.labels, data.tokenizer, dopts);
  if (!c.data.val.empty()) data.val = std::make_shared<MultimodalDataset>(std::move(val_manifest), &data.labels, data.tokenizer, dopts);
  if (!c.data.test.empty()) data.test = std::make_shared<MultimodalDataset>(std::move(test_manifest), &data.labels, data.tokenizer, dopts);
  for (const auto& d : {data.train, data.val, data.test}) {
    if (d) report_skipped(*d, /*max_listed=*/10);
  }
  // An empty split is an error (a test split of 0 samples would report accuracy 0).
  for (const auto& [d, what] : {std::pair{data.train, "training"}, {data.val, "validation"}, {data.test, "test"}}) {
    if (!d || d->size() > 0) continue;
    const auto n = d->skipped().size();
    throw DataError(d->path(), 0, std::string("the ") + what + " split is empty" +
                                      (n > 0 ? ": all " + std::to_string(n) + " samples were skipped (listed above)" : ""));
  }
  log::info("data", "train " + std::to_string(data.train->size()) + ", val " +
                        std::to_string(data.val ? data.val->size() : 0) + ", test " +
                        std::to_string(data.test ? data.test->size() : 0) + " samples, " +
                        std::to_string(data.labels.size()) + " intents" +
                        (data.tokenizer ? ", vocabulary " + std::to_string(data.tokenizer->vocab_size()) : ""));

  // A resumed run's checkpoint must fit the model and optimizer this config builds: checked
  // now, so that a refused --resume (another architecture, a truncated file) leaves the run
  // directory as it was.
  if (resuming && !(options.resume == "auto" && !fs::exists(run_dir / "last.pt"))) {
    auto probe = build_model(c, data);
    auto probe_optimizer = make_optimizer(probe->parameters(), c.trainer_options().optimizer);
    load_checkpoint(options.resume == "auto" ? (run_dir / "last.pt").string() : options.resume, *probe,
                    probe_optimizer.get(), c10::Device(c10::kCPU), /*restore_rng=*/false);
  }

  // 5. Everything checked: now the run directory is created and written (by rank 0).
  const std::vector<std::pair<std::string, std::shared_ptr<const MultimodalDataset>>> splits{
      {"train", data.train}, {"val", data.val}, {"test", data.test}};
  if (writer) {
    check_run_dir(run_dir, /*must_be_empty=*/!c.output.overwrite && !resuming, /*create=*/true);
    setup_logging("info", (run_dir / "train.log").string(), tag);
    log::info("run", "run directory " + run_dir.string());
    if (data.tokenizer && !(resuming && fs::exists(tok_path))) {
      const fs::path model(data.tokenizer->model_path());
      fs::copy_file(model, tok_path, fs::copy_options::overwrite_existing);
      auto vocab = fs::path(model).replace_extension(".vocab");
      if (fs::exists(vocab)) fs::copy_file(vocab, run_dir / "tokenizer.vocab", fs::copy_options::overwrite_existing);
      data.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(tok_path.string()));
    }
    data.labels.save((run_dir / "labels.json").string());
    save_config(c, (run_dir / "config.yaml").string());
    for (const auto& [name, d] : splits) {
      if (d) save_skipped(*d, run_dir / ("skipped_" + name + ".txt"));
    }
  }

  // 6. Model and training.
  torch::manual_seed(static_cast<uint64_t>(c.runtime.seed));
  auto model = build_model(c, data);
  auto trainer_options = c.trainer_options();
  if (!writer) trainer_options.progress = "none";
  Trainer trainer(model, trainer_options, comm ? options.communicator : nullptr);
  if (resuming) {
    const auto checkpoint =
        options.resume == "auto" ? (run_dir / "last.pt").string() : options.resume;
    if (options.resume == "auto" && !fs::exists(checkpoint)) {
      // Stopped before its first epoch ended: nothing to continue, so start from the beginning
      // (same seed, same tokenizer and labels); stale metric lines go.
      log::info("run", "--resume auto: no last.pt in " + run_dir.string() +
                           " yet; training from the first epoch");
      std::error_code ec;
      if (writer) fs::remove(run_dir / "metrics.jsonl", ec);
    } else {
      trainer.resume(checkpoint);
    }
  } else if (writer) {
    std::error_code ec;
    fs::remove(run_dir / "metrics.jsonl", ec);  // output.overwrite: a new run, new lines
  }
  auto train_loader = make_loader(c, data.train, /*training=*/true, rank, world_size);
  auto val_loader = data.val ? make_loader(c, data.val, /*training=*/false, rank, world_size) : nullptr;
  TrainRunResult result;
  result.run_dir = run_dir.string();
  result.fit = trainer.fit(*train_loader, val_loader.get());
  if (!writer) return result;  // rank 0 evaluates and writes the reports

  // 7. Evaluation of the final (best) weights.
  //    Calibration (calibration.json), then on calibrated probabilities the out-of-scope
  //    threshold and the decision thresholds (decision.json), all fitted on val.
  Predictions val_predictions;
  if (data.val) {
    auto val_loader_for_fit = make_loader(c, data.val, /*training=*/false);
    val_predictions = collect_predictions(trainer.model(), *val_loader_for_fit, trainer.device(),
                                          parse_precision(c.runtime.precision));
  }
  std::error_code stale;
  fs::remove(run_dir / "calibration.json", stale);  // a resumed or overwritten run refits
  const bool calibrate = c.calibration.enabled && c.calibration.method == "temperature";
  const ServingSetup serving = fit_serving(val_predictions, c, run_dir, "val", calibrate, oos);
  save_oos(run_dir, oos);
  for (const auto& split : c.eval.splits) {
    const auto& d = split == "val" ? data.val : data.test;
    result.metrics[split] = evaluate_split(trainer.model(), c, data, d, split, result.run_dir,
                                           trainer.device(), options.print_tables, oos, serving);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info("run", "finished in " + std::to_string(static_cast<int64_t>(secs)) + " s; reports in " +
                       result.run_dir);
  std::size_t skipped = 0;
  std::string per_split;
  for (const auto& [name, d] : splits) {
    if (!d || d->skipped().empty()) continue;
    skipped += d->skipped().size();
    per_split += (per_split.empty() ? "" : ", ") + name + " " + std::to_string(d->skipped().size()) +
                 " (skipped_" + name + ".txt)";
  }
  if (skipped > 0) {
    log::warn("data", "skipped " + std::to_string(skipped) + " sample(s) in all: " + per_split +
                          " in " + result.run_dir);
    for (const auto& [name, d] : splits) {
      if (d) report_skipped(*d);
    }
  }
  return result;
}

ServingSetup load_serving(const std::string& run_dir_name, const Config& c) {
  const fs::path run_dir(run_dir_name);
  ServingSetup s;
  const auto cal = load_calibration(run_dir.string());
  s.calibration_method = cal.method;
  s.temperature = cal.temperature;
  s.decision = c.decision;
  s.thresholds = {c.decision.min_confidence, c.decision.clarify_margin};
  std::ifstream in(run_dir / "decision.json");
  if (in) {
    const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("min_confidence") || !j["min_confidence"].is_number() ||
        !j.contains("clarify_margin") || !j["clarify_margin"].is_number()) {
      throw Error("'" + (run_dir / "decision.json").string() +
                  "' has no numeric min_confidence and clarify_margin");
    }
    s.thresholds = {j["min_confidence"].get<double>(), j["clarify_margin"].get<double>()};
  } else if (s.thresholds.min_confidence == -1 || s.thresholds.clarify_margin == -1) {
    throw Error("'" + (run_dir / "decision.json").string() +
                "' is missing: the config chooses decision thresholds on val (-1); run 'mmintent "
                "calibrate'");
  }
  return s;
}

ClassificationMetrics evaluate_run(const std::string& run_dir, const std::string& split_or_file,
                                   bool print_table) {
  const auto cfg_path = fs::path(run_dir) / "config.yaml";
  if (!fs::exists(cfg_path)) {
    throw Error("'" + run_dir + "' is not a run directory (no config.yaml)");
  }
  Config c = load_config(cfg_path.string());
  configure_runtime(c);
  std::string manifest_path = split_or_file, name = split_or_file;
  if (split_or_file == "val" || split_or_file == "test") {
    manifest_path = split_or_file == "val" ? c.data.val : c.data.test;
    if (manifest_path.empty()) throw Error("the run's config has no data." + split_or_file + " split");
  } else {
    if (!fs::exists(manifest_path)) throw DataError(manifest_path, 0, "manifest does not exist");
    name = fs::path(manifest_path).stem().string();
  }
  RunData data = load_run_data(c, run_dir);
  auto eval_options = dataset_options(c);
  eval_options.check_images = true;
  auto dataset = std::make_shared<MultimodalDataset>(
      read_manifest(manifest_path, manifest_read_options(c, true)), &data.labels, data.tokenizer,
      eval_options);
  report_skipped(*dataset);
  save_skipped(*dataset, fs::path(run_dir) / ("skipped_" + name + ".txt"));
  if (dataset->size() == 0) {
    throw DataError(manifest_path, 0, "no sample to evaluate: the manifest is empty or every sample was skipped");
  }
  const auto device = resolve_device(c.runtime.device);
  auto model = build_model(c, data);
  load_checkpoint((fs::path(run_dir) / "model.pt").string(), *model, nullptr, device, false);
  model->to(device);
  OosSetup oos = oos_setup(c, data.labels);
  if (oos.threshold_method) {
    std::ifstream in(fs::path(run_dir) / "oos.json");
    const auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_object() || !j.contains("threshold")) {
      throw Error("'" + run_dir + "/oos.json' is missing or has no threshold");
    }
    oos.threshold = j["threshold"].get<double>();
  }
  const ServingSetup serving = load_serving(run_dir, c);
  return evaluate_split(model, c, data, dataset, name, run_dir, device, print_table, oos, serving);
}

CalibrateRunResult calibrate_run(const std::string& run_dir, const std::string& split_or_file,
                                 bool fit_temperature) {
  const auto cfg_path = fs::path(run_dir) / "config.yaml";
  if (!fs::exists(cfg_path))
    throw Error("'" + run_dir + "' is not a run directory (no config.yaml)");
  Config c = load_config(cfg_path.string());
  configure_runtime(c);
  std::string manifest_path = split_or_file, name = split_or_file;
  if (split_or_file == "val" || split_or_file == "test") {
    manifest_path = split_or_file == "val" ? c.data.val : c.data.test;
    if (manifest_path.empty())
      throw Error("the run's config has no data." + split_or_file + " split");
  } else if (!fs::exists(manifest_path)) {
    throw DataError(manifest_path, 0, "manifest does not exist");
  }
  RunData data = load_run_data(c, run_dir);
  auto options = dataset_options(c);
  options.check_images = true;  // bad images are errors or skips before any prediction
  auto dataset = std::make_shared<MultimodalDataset>(
      read_manifest(manifest_path, manifest_read_options(c, true)), &data.labels, data.tokenizer,
      options);
  report_skipped(*dataset);
  if (dataset->size() == 0) throw DataError(manifest_path, 0, "no sample to calibrate on");
  const auto device = resolve_device(c.runtime.device);
  auto model = build_model(c, data);
  load_checkpoint((fs::path(run_dir) / "model.pt").string(), *model, nullptr, device, false);
  model->to(device);
  auto loader = make_loader(c, dataset, /*training=*/false);
  const auto p = collect_predictions(model, *loader, device, parse_precision(c.runtime.precision));
  OosSetup oos = oos_setup(c, data.labels);
  if (!fit_temperature) {
    std::error_code ec;
    fs::remove(fs::path(run_dir) / "calibration.json", ec);
  }
  const ServingSetup s = fit_serving(p, c, fs::path(run_dir), name, fit_temperature, oos);
  save_oos(fs::path(run_dir), oos);
  CalibrateRunResult r;
  r.fit = load_calibration(run_dir).fit;
  const auto labels = to_vector(p.labels);
  r.before = calibration_metrics(to_doubles(p.probs), p.probs.size(1), labels);
  r.after =
      calibration_metrics(to_doubles(calibrated(p.probs, s.temperature)), p.probs.size(1), labels);
  r.min_confidence = s.thresholds.min_confidence;
  r.clarify_margin = s.thresholds.clarify_margin;
  if (oos.threshold_method) r.oos_threshold = oos.threshold;
  return r;
}

}  // namespace mmintent
