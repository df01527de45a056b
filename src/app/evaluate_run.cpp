// `eval` and `calibrate` of a finished run, and the steps they share with `train` and `tune`:
// fitting what a run serves on val, and evaluating one split into the run's reports.
#include "mmintent/app/run.h"

#include "mmintent/core/log.h"
#include "mmintent/core/seed.h"
#include "mmintent/data/text_noise.h"
#include "mmintent/error.h"
#include "mmintent/evaluation/out_of_scope.h"
#include "mmintent/evaluation/report.h"
#include "mmintent/policy/rewrite.h"
#include "mmintent/training/device.h"
#include "steps.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

namespace mmintent {
namespace fs = std::filesystem;
namespace {

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const auto c = t.to(torch::kCPU, torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::vector<double> to_doubles(const at::Tensor& t) {
  const auto c = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

/// probs [N,K] as `calibration` serves them (calibrate_probabilities); none or T = 1 leaves
/// them as they are.
at::Tensor calibrated(const at::Tensor& probs, const CalibrationFile& calibration) {
  if (!probs.defined() || calibration.method == "none" ||
      (calibration.method == "temperature" && calibration.temperature == 1.0)) {
    return probs;
  }
  const auto out = calibrate_probabilities(calibration, to_doubles(probs), probs.size(1));
  return torch::tensor(out, torch::kDouble)
      .reshape({probs.size(0), probs.size(1)})
      .to(torch::kFloat);
}

/// Temperature scaling by T (T = 1: none), as an ensemble member is calibrated.
CalibrationFile temperature_calibration(double temperature) {
  CalibrationFile c;
  c.method = temperature == 1.0 ? "none" : "temperature";
  c.temperature = temperature;
  return c;
}

/// calibration.method split fitted on the validation predictions `val` (raw probabilities), at
/// the out-of-scope share calibration.oos_share (-1: val's own). ConfigError naming
/// calibration.method when val cannot fit it (no out-of-scope or no in-scope sample).
CalibrationFile fit_split(const Predictions& val, const Config& c, const OosSetup& oos, const std::string& fitted_on) {
  CalibrationFile cal;
  cal.method = "split";
  cal.fitted_on = fitted_on;
  try {
    cal.split = fit_split_calibration(logits_from_probabilities(to_doubles(val.probs)), val.probs.size(1),
                                      to_vector(val.labels), oos.index);
  } catch (const Error& e) {
    throw ConfigError(c.source, "calibration.method", 0,
                      "split calibration cannot be fitted on " + fitted_on + ": " + e.what());
  }
  auto& f = cal.split;
  f.share_from = fitted_on;
  if (c.calibration.oos_share != -1) {
    f.share = c.calibration.oos_share;
    f.share_from = "calibration.oos_share";
  }
  cal.fit = f.in_scope_fit;
  cal.fit.count = f.count;
  log::info("calibration", "split calibration fitted on " + fitted_on + " (" + std::to_string(f.count) + " samples, " +
                               std::to_string(f.oos_count) + " out of scope): in-scope temperature " +
                               std::to_string(f.in_scope_temperature) + ", P(oos) = sigmoid(" + std::to_string(f.slope) +
                               " * log-odds + " + std::to_string(f.intercept) + "), out-of-scope share " +
                               std::to_string(f.fitted_share) + " -> " + std::to_string(f.share));
  return cal;
}

/// The decision samples of predictions `p` (probabilities calibrated), the rows the threshold
/// rejects given (`rejected`, from oos_rejections) or computed.
std::vector<DecisionSample> samples_of(const Predictions& p, const OosSetup& oos,
                                       const std::vector<bool>* rejected = nullptr) {
  if (!p.probs.defined()) return {};
  return decision_samples(to_doubles(p.probs), p.probs.size(1), to_vector(p.labels), oos.trained_class(),
                          rejected ? *rejected : oos_rejections(oos, p.probs, p.logits, p.features));
}

std::vector<SampleInfo> sample_infos(const MultimodalDataset& d) {
  std::vector<SampleInfo> out;
  out.reserve(d.size());
  for (const auto& r : d.records()) {
    const auto audio = r.inputs.find("audio");
    out.push_back({r.text, r.image, audio == r.inputs.end() ? std::string() : audio->second});
  }
  return out;
}

/// Chooses the out-of-scope threshold on the (calibrated) validation predictions; save_oos
/// records it in oos.json. A top probability's threshold (method threshold, score max_prob)
/// lies in [0, 1]; other scores' anywhere.
void choose_threshold(const Predictions& val, const Config& c, OosSetup& oos) {
  if (!oos.thresholded || c.oos.threshold >= 0) return;
  if (!val.probs.defined()) {
    throw ConfigError(c.source, "oos.threshold", 0, "choosing the threshold needs data.val");
  }
  const auto gold = to_vector(val.labels);
  const bool top_probability = oos.threshold_method && oos.score == "max_prob";
  std::vector<double> scores;
  std::vector<int64_t> predicted;
  if (!top_probability) {
    scores = to_doubles(oos_scores(oos, val.probs, val.logits, val.features));
    predicted = to_vector(val.probs.argmax(1));
  }
  const std::string what = "out-of-scope threshold (" + oos.score + " score) chosen on the validation split: ";
  if (c.oos.max_in_scope_loss >= 0) {
    oos.threshold = top_probability
                        ? choose_oos_threshold_for_loss(val.probs, gold, oos.index, c.oos.max_in_scope_loss)
                        : choose_score_threshold_for_loss(scores, predicted, gold, oos.index, c.oos.max_in_scope_loss);
    log::info("eval", what + std::to_string(oos.threshold) + " (the highest costing at most " +
                          std::to_string(c.oos.max_in_scope_loss) + " of in-scope accuracy)");
  } else {
    oos.threshold = top_probability ? choose_oos_threshold(val.probs, gold, oos.index)
                                    : choose_score_threshold(scores, predicted, gold, oos.index);
    log::info("eval", what + std::to_string(oos.threshold));
  }
}

/// The class each row of `p` (probabilities calibrated) is served as: the arg-max, or
/// `oos.index` where the threshold rejects it (`rejected` given, or computed).
std::vector<int64_t> served_classes(const Predictions& p, const OosSetup& oos,
                                    const std::vector<bool>* rejected = nullptr) {
  auto served = to_vector(p.probs.argmax(1));
  const auto computed = rejected ? std::vector<bool>() : oos_rejections(oos, p.probs, p.logits, p.features);
  const auto& r = rejected ? *rejected : computed;
  for (size_t i = 0; i < served.size(); ++i) {
    if (r[i]) served[i] = oos.index;
  }
  return served;
}

/// `dataset` predicted by `model` (with the features the out-of-scope score needs), its
/// probabilities calibrated by `calibration`.
Predictions predict_calibrated(IntentClassifier& model, const Config& c,
                               const std::shared_ptr<const MultimodalDataset>& dataset, const c10::Device& device,
                               const CalibrationFile& calibration, const OosSetup& oos) {
  auto loader = make_loader(c, dataset, /*training=*/false);
  auto p = collect_predictions(model, *loader, device, parse_precision(c.runtime.precision), 0,
                               /*with_features=*/oos.needs_features());
  p.probs = calibrated(p.probs, calibration);
  return p;
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
  const auto p = predict_calibrated(model, c, rewritten, device, s.calibration, oos);
  if (!p.probs.defined()) return check;
  const auto after = served_classes(p, oos);
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

/// A finished run opened on a split or a manifest: the preamble `eval` and `calibrate` share.
struct OpenedRun {
  RunDirectory run;
  Config config;
  RunData data;
  std::string manifest_path;
  std::string name;  ///< the split, or the manifest's stem
  std::shared_ptr<MultimodalDataset> dataset;
  c10::Device device{c10::kCPU};
  IntentClassifier model{nullptr};

  explicit OpenedRun(const std::string& run_dir) : run(run_dir) {}

  /// Builds the model and loads the run's final weights onto the configured device.
  void load_model() {
    device = resolve_device(config.runtime.device);
    model = load_run_model(run, config, data, device);
  }
};

/// Reads the run's config (and sets the runtime from it), labels and tokenizer, and the
/// samples of `split_or_file` (images checked), reporting the skipped ones.
OpenedRun open_run(const std::string& run_dir, const std::string& split_or_file) {
  OpenedRun r(run_dir);
  r.run.require_finished();
  r.config = r.run.load_config();
  const Config& c = r.config;
  configure_runtime(c);
  r.manifest_path = split_or_file;
  r.name = split_or_file;
  if (split_or_file == "val" || split_or_file == "test") {
    r.manifest_path = split_or_file == "val" ? c.data.val : c.data.test;
    if (r.manifest_path.empty()) throw Error("the run's config has no data." + split_or_file + " split");
  } else {
    if (!fs::exists(r.manifest_path)) throw DataError(r.manifest_path, 0, "manifest does not exist");
    r.name = fs::path(r.manifest_path).stem().string();
  }
  r.data = load_run_data(r.run, c);
  auto options = dataset_options(c);
  options.check_images = true;  // bad images are errors or skips before any prediction
  r.dataset = std::make_shared<MultimodalDataset>(
      read_manifest(r.manifest_path, manifest_read_options(c, true)), &r.data.labels,
      r.data.tokenizer, options);
  detail::report_skipped(*r.dataset);
  return r;
}

}  // namespace

namespace detail {

/// True when `inner` is `outer` or lies inside it (both absolute and normalised).
bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin(), o = outer.begin();
  for (; o != outer.end() && !o->empty(); ++o, ++i) {
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

fs::path normalised(const std::string& p) {
  std::error_code ec;
  auto c = fs::weakly_canonical(fs::absolute(p), ec);
  return (ec ? fs::absolute(p) : c).lexically_normal();
}

/// Checks and makes the new run directory.
void check_out_dir(const fs::path& dir, bool overwrite) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw ConfigError("", "--out", 0, "'" + dir.string() + "' exists and is not a directory");
  }
  if (!overwrite && fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    throw ConfigError("", "--out", 0,
                      "run directory '" + dir.string() +
                          "' is not empty; choose another --out or pass --overwrite");
  }
  fs::create_directories(dir, ec);
  if (ec) {
    throw ConfigError("", "--out", 0, "cannot create run directory '" + dir.string() + "': " + ec.message());
  }
}

std::shared_ptr<MultimodalDataset> read_split(const Config& c, const RunData& data, const std::string& path,
                                              const std::string& drop_label) {
  auto manifest = read_manifest(path, manifest_read_options(c, true));
  if (!drop_label.empty()) {
    auto& records = manifest.records;
    records.erase(std::remove_if(records.begin(), records.end(), [&](const Record& x) { return x.label == drop_label; }),
                  records.end());
  }
  return std::make_shared<MultimodalDataset>(std::move(manifest), &data.labels, data.tokenizer, dataset_options(c));
}

std::vector<MemberSetup> member_setups(const RunDirectory& run, const RunData& data) {
  const auto manifest = run.load_ensemble_manifest();
  const auto runs = ensemble_member_runs(run, manifest);
  std::vector<MemberSetup> out;
  for (size_t i = 0; i < runs.size(); ++i) {
    const Config mc = runs[i].load_config();
    out.push_back({runs[i].str(), manifest.members[i].weights_sha256, manifest.members[i].temperature,
                   load_oos(runs[i], mc, data.labels)});
  }
  return out;
}

ServedSplit serve_split(IntentClassifier& model, const Config& c, const std::shared_ptr<const MultimodalDataset>& dataset,
                        const c10::Device& device, const CalibrationFile& calibration, const OosSetup& oos) {
  const auto p = predict_calibrated(model, c, dataset, device, calibration, oos);
  ServedSplit s;
  s.served = served_classes(p, oos);
  s.gold = to_vector(p.labels);
  const int64_t classes = p.probs.size(1) + (oos.threshold_method ? 1 : 0);
  s.metrics = compute_metrics(s.served, s.gold, classes);
  if (oos.enabled) {
    s.has_oos = true;
    s.oos = oos_metrics(s.served, s.gold, oos.index);
  }
  return s;
}

void evaluate_members(IntentClassifier& ensemble, const Config& c,
                      const std::shared_ptr<const MultimodalDataset>& dataset, const std::string& name,
                      const RunDirectory& run, const c10::Device& device, bool print_table,
                      const std::vector<MemberSetup>& members) {
  const auto& models = ensemble->members();
  if (models.size() != members.size() || dataset->size() == 0) return;
  std::vector<MemberReport> reports;
  for (size_t k = 0; k < models.size(); ++k) {
    IntentClassifier member(models[k]);
    const auto& setup = members[k];
    const auto s = serve_split(member, c, dataset, device, temperature_calibration(setup.temperature), setup.oos);
    MemberReport r{setup.run, setup.weights_sha256, setup.temperature, s.metrics.accuracy, s.metrics.macro_f1,
                   s.has_oos, s.oos};
    if (print_table) {
      std::printf("%s member %zu (%s): accuracy %.4f, macro_f1 %.4f", name.c_str(), k, setup.run.c_str(), r.accuracy,
                  r.macro_f1);
      if (r.has_oos) std::printf(", in-scope accuracy %.4f, oos recall %.4f", r.oos.in_scope_accuracy, r.oos.oos_recall);
      std::printf("\n");
    }
    reports.push_back(std::move(r));
  }
  write_members_report(run.str(), name, reports);
}

void evaluate_robustness(IntentClassifier& model, const Config& c, const RunData& data,
                         const std::shared_ptr<const MultimodalDataset>& dataset, const std::string& name,
                         const RunDirectory& run, const c10::Device& device, bool print_table, const OosSetup& oos,
                         const ServingSetup& serving, const ClassificationMetrics& clean,
                         const std::vector<TextNoise>& noises) {
  // The clean split's served classes, for the out-of-scope figures' baseline.
  auto served_on = [&](const std::shared_ptr<const MultimodalDataset>& d, std::vector<int64_t>& gold) {
    const auto p = predict_calibrated(model, c, d, device, serving.calibration, oos);
    gold = to_vector(p.labels);
    return std::make_pair(served_classes(p, oos), p.probs.size(1) + (oos.threshold_method ? 1 : 0));
  };
  std::vector<int64_t> clean_gold;
  OosMetrics clean_oos;
  if (oos.enabled) clean_oos = oos_metrics(served_on(dataset, clean_gold).first, clean_gold, oos.index);
  std::vector<RobustnessReport> reports;
  for (const auto& noise : noises) {
    Manifest m;
    m.path = dataset->records().empty() ? std::string() : name;
    m.records = dataset->records();
    for (size_t i = 0; i < m.records.size(); ++i) {
      // Per sample and noise kind, from the run's seed: the same noisy split on every rerun.
      m.records[i].text = apply_text_noise(m.records[i].text, noise,
                                           mix_seed(static_cast<uint64_t>(c.runtime.seed),
                                                    static_cast<uint64_t>(noise.kind) + 1, i));
    }
    const auto noisy = std::make_shared<MultimodalDataset>(std::move(m), &data.labels, data.tokenizer, dataset_options(c));
    std::vector<int64_t> gold;
    const auto [served, classes] = served_on(noisy, gold);
    const auto metrics = compute_metrics(served, gold, classes);
    RobustnessReport r{noise.str(), metrics.accuracy, metrics.macro_f1, clean.accuracy, oos.enabled, {}, clean_oos};
    if (oos.enabled) r.oos = oos_metrics(served, gold, oos.index);
    if (print_table) {
      std::printf("%s with %s: accuracy %.4f (clean %.4f)", name.c_str(), r.noise.c_str(), r.accuracy, r.clean_accuracy);
      if (r.has_oos) {
        std::printf(", in-scope accuracy %.4f (clean %.4f), oos recall %.4f", r.oos.in_scope_accuracy,
                    clean_oos.in_scope_accuracy, r.oos.oos_recall);
      }
      std::printf("\n");
    }
    reports.push_back(std::move(r));
  }
  write_robustness_report(run.str(), name, reports);
}

void report_skipped(const MultimodalDataset& d, std::size_t max_listed) {
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

ServingSetup fit_serving(const Predictions& val, const Config& c, const RunDirectory& run,
                         const std::string& fitted_on, bool fit_temperature_too, OosSetup& oos) {
  ServingSetup s;
  s.decision = c.decision;
  if (val.probs.defined() && fit_temperature_too && c.calibration.method == "split") {
    s.calibration = fit_split(val, c, oos, fitted_on);
    save_calibration(run, s.calibration);
  } else if (val.probs.defined() && fit_temperature_too) {
    const auto logits = logits_from_probabilities(to_doubles(val.probs));
    const auto fit = fit_temperature(logits, val.probs.size(1), to_vector(val.labels));
    s.calibration = CalibrationFile{"temperature", fit.temperature, fitted_on, fit, {}};
    save_calibration(run, s.calibration);
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
  cal.probs = calibrated(val.probs, s.calibration);
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
  save_decision(run, s, chosen);
  return s;
}

std::optional<MahalanobisFit> fit_oos_features(IntentClassifier& model, const Config& c,
                                               const std::shared_ptr<const MultimodalDataset>& train,
                                               const c10::Device& device, const OosSetup& oos) {
  if (!oos.enabled || !train || train->size() == 0) return std::nullopt;
  auto loader = make_loader(c, train, /*training=*/false);
  const auto p = collect_predictions(model, *loader, device, parse_precision(c.runtime.precision), 0,
                                     /*with_features=*/true);
  return fit_mahalanobis(p.features, to_vector(p.labels), oos.index);
}

FittedServing fit_run_serving(IntentClassifier& model, const Config& c, const RunDirectory& run,
                              const std::shared_ptr<const MultimodalDataset>& train,
                              const std::shared_ptr<const MultimodalDataset>& val, const c10::Device& device,
                              const std::string& fitted_on, bool fit_temperature, OosSetup& oos) {
  if (oos.thresholded && oos.score == "energy" && model->is_ensemble()) {
    throw ConfigError(c.source, "oos.score", 0,
                      "energy is a log-sum-exp over one network's logits; an ensemble averages probabilities: "
                      "use max_prob or mahalanobis");
  }
  FittedServing out;
  out.features = fit_oos_features(model, c, train, device, oos);
  if (oos.needs_features()) {
    if (!out.features) {
      throw ConfigError(c.source, "oos.score", 0,
                        "mahalanobis fits on the training split (data.train), and there is no training sample");
    }
    oos.mahalanobis = std::make_shared<const MahalanobisFit>(*out.features);
  }
  if (val) {
    auto loader = make_loader(c, val, /*training=*/false);
    out.val = collect_predictions(model, *loader, device, parse_precision(c.runtime.precision), 0,
                                  /*with_features=*/oos.needs_features());
  }
  out.serving = fit_serving(out.val, c, run, fitted_on, fit_temperature, oos);
  save_oos(run, oos);
  return out;
}

ClassificationMetrics evaluate_split(IntentClassifier& model, const Config& c, const RunData& data,
                                     const std::shared_ptr<const MultimodalDataset>& dataset,
                                     const std::string& name, const RunDirectory& run,
                                     const c10::Device& device, bool print_table,
                                     const OosSetup& oos, const ServingSetup& serving,
                                     const std::optional<MahalanobisFit>& features) {
  auto loader = make_loader(c, dataset, /*training=*/false);
  auto predictions = collect_predictions(model, *loader, device, parse_precision(c.runtime.precision), 0,
                                         /*with_features=*/features.has_value() || oos.needs_features());
  // Calibrated probabilities from here on: what the Predictor serves.
  CalibrationReport calibration;
  if (predictions.probs.defined()) {
    const auto labels = to_vector(predictions.labels);
    const int64_t k = predictions.probs.size(1);
    calibration.method = serving.calibration.method;
    calibration.temperature = serving.calibration.method == "temperature" ? serving.calibration.temperature : 1.0;
    if (serving.calibration.method == "split") calibration.split = serving.calibration.split;
    calibration.before = calibration_metrics(to_doubles(predictions.probs), k, labels);
    const auto raw = predictions.probs;
    predictions.probs = calibrated(predictions.probs, serving.calibration);
    calibration.after = calibration_metrics(to_doubles(predictions.probs), k, labels);
    if (oos.trained_class() >= 0) {  // out-of-scope samples marked as no class: in-scope only
      auto in_scope = labels;
      for (auto& y : in_scope) y = y == oos.index ? -1 : y;
      calibration.has_in_scope = true;
      calibration.oos_share = labels.empty() ? 0.0
                                             : static_cast<double>(std::count(labels.begin(), labels.end(), oos.index)) /
                                                   static_cast<double>(labels.size());
      calibration.in_scope_before = calibration_metrics(to_doubles(raw), k, in_scope);
      calibration.in_scope_after = calibration_metrics(to_doubles(predictions.probs), k, in_scope);
    }
  }
  // Rows the out-of-scope threshold rejects: computed once for the decisions, the served
  // classes and the reports below.
  const std::vector<bool> rejected = oos_rejections(oos, predictions.probs, predictions.logits, predictions.features);
  const auto decision_samples_of_split = samples_of(predictions, oos, &rejected);
  std::vector<int64_t> served_by_index;  // served class per record, for the rewrite check
  if (predictions.probs.defined()) {
    const auto served = served_classes(predictions, oos, &rejected);
    const auto index = to_vector(predictions.indices);
    served_by_index.assign(static_cast<size_t>(dataset->size()), -1);
    for (size_t i = 0; i < served.size(); ++i) {
      served_by_index[static_cast<size_t>(index[i])] = served[i];
    }
  }
  // How well each out-of-scope score tells the split's out-of-scope samples apart (before the
  // threshold column below changes the probabilities).
  std::vector<std::pair<std::string, OosDetection>> detection;
  if (oos.enabled && predictions.probs.defined()) {
    const auto gold = to_vector(predictions.labels);
    const auto has_oos = std::count(gold.begin(), gold.end(), oos.index);
    if (has_oos > 0 && has_oos < static_cast<int64_t>(gold.size())) {
      detection.emplace_back("max_prob", oos_detection(max_prob_scores(predictions.probs, oos.index), gold, oos.index));
      // An ensemble's logits are the log of its mean probabilities: their log-sum-exp is no
      // energy (Liu et al.'s is over one network's logits), so the report leaves it out.
      if (!model->is_ensemble()) {
        detection.emplace_back("energy", oos_detection(energy_scores(predictions.logits, oos.index), gold, oos.index));
      }
      // The run's own fit where it keeps one (oos.score: mahalanobis), else the one given.
      const MahalanobisFit* fit = oos.mahalanobis ? oos.mahalanobis.get() : features ? &*features : nullptr;
      if (fit) {
        detection.emplace_back("mahalanobis",
                               oos_detection(mahalanobis_scores(*fit, predictions.features), gold, oos.index));
      }
    }
  }
  auto names = data.labels.names();
  if (oos.thresholded && predictions.probs.defined()) {
    // Rejections show as the out-of-scope class in reports, confusion matrix and top-k: a row
    // the threshold rejects becomes 1 on that class's column (method threshold: an extra one).
    const auto r = torch::tensor(std::vector<float>(rejected.begin(), rejected.end()), torch::kFloat).unsqueeze(1);
    if (oos.threshold_method) {
      predictions.probs = torch::cat({predictions.probs * (1 - r), r}, 1);
      names.push_back(oos.label);
    } else {
      auto one_hot = torch::zeros_like(predictions.probs);
      one_hot.select(1, oos.index).fill_(1);
      predictions.probs = predictions.probs * (1 - r) + one_hot * r;
    }
  }
  SplitReportOptions ro;
  ro.top_ks = c.eval.top_k;
  ro.listed_top = c.eval.listed_top;
  ro.plots = c.eval.plots;
  auto metrics = write_split_report(run.str(), name, predictions, names, sample_infos(*dataset), ro);
  if (print_table) std::cout << format_metrics_table(name, metrics, names) << std::flush;
  if (oos.enabled && predictions.probs.defined()) {
    const auto om = oos_metrics(to_vector(predictions.probs.argmax(1)), to_vector(predictions.labels), oos.index);
    write_oos_report(run.str(), name,
                     OosReport{oos.label, oos.method, oos.thresholded ? oos.score : std::string(), oos.threshold,
                               om, detection});
    if (print_table) {
      const std::string rule =
          oos.method + (oos.thresholded ? ", " + oos.score + " score under " + std::to_string(oos.threshold) : "");
      std::printf("%s out-of-scope (%s): in-scope accuracy %.4f, oos recall %.4f, oos precision %.4f\n",
                  name.c_str(), rule.c_str(), om.in_scope_accuracy, om.oos_recall, om.oos_precision);
      for (const auto& [score, d] : detection) {
        std::printf("%s out-of-scope score %s: AUROC %.4f, FPR at 95%% TPR %.4f\n", name.c_str(), score.c_str(),
                    d.auroc, d.fpr_at_95_tpr);
      }
    }
  }
  write_calibration_report(run.str(), name, calibration, c.eval.plots);
  DecisionReport dr;
  dr.thresholds = serving.thresholds;
  dr.options = serving.decision;
  dr.stats = decision_stats(decision_samples_of_split, serving.thresholds);
  dr.curve = coverage_curve(decision_samples_of_split);
  write_decision_report(run.str(), name, dr, c.eval.plots);
  if (print_table && predictions.probs.defined()) {
    char how[160];
    if (calibration.method == "split") {
      std::snprintf(how, sizeof how, "split, in-scope T = %.4f, out-of-scope share %.4f",
                    calibration.split.in_scope_temperature, calibration.split.share);
    } else {
      std::snprintf(how, sizeof how, "%s, T = %.4f", calibration.method.c_str(), calibration.temperature);
    }
    std::printf("%s calibration (%s): ECE %.4f -> %.4f, NLL %.4f -> %.4f", name.c_str(), how,
                calibration.before.ece, calibration.after.ece, calibration.before.nll, calibration.after.nll);
    if (calibration.has_in_scope) std::printf(" (out-of-scope share of the split %.4f)", calibration.oos_share);
    std::printf("\n");
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
    write_rewrite_report(run.str(), name, check);
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

}  // namespace detail

ClassificationMetrics evaluate_run(const std::string& run_dir, const std::string& split_or_file,
                                   bool print_table, const std::vector<std::string>& perturb) {
  std::vector<TextNoise> noises;
  for (const auto& spec : perturb) {
    try {
      noises.push_back(parse_text_noise(spec));
    } catch (const std::invalid_argument& e) {
      throw ConfigError("", "--perturb", 0, e.what());
    }
  }
  OpenedRun r = open_run(run_dir, split_or_file);
  r.run.save_skipped(r.name, r.dataset->skipped());
  if (r.dataset->size() == 0) {
    throw DataError(r.manifest_path, 0, "no sample to evaluate: the manifest is empty or every sample was skipped");
  }
  r.load_model();
  const OosSetup oos = load_oos(r.run, r.config, r.data.labels);
  const ServingSetup serving = load_serving(r.run, r.config);
  check_calibration(r.run, serving, oos);
  // The feature-space out-of-scope score fits on the run's training split, where it still is
  // and still reads (else the report leaves that score out: the evaluation does not need it).
  std::optional<MahalanobisFit> features;
  const auto& c = r.config;
  if (oos.enabled && !oos.mahalanobis && !c.data.train.empty()) {  // else the run's own fit
    try {
      const auto train = detail::read_split(c, r.data, c.data.train, oos.label);
      features = detail::fit_oos_features(r.model, c, train, r.device, oos);
    } catch (const Error& e) {
      log::warn("eval", std::string("the mahalanobis out-of-scope score is left out of the report: it fits on the "
                                    "training split, which cannot be read: ") + e.what());
    }
  }
  auto metrics = detail::evaluate_split(r.model, r.config, r.data, r.dataset, r.name, r.run, r.device,
                                        print_table, oos, serving, features);
  if (r.run.has_ensemble()) {
    detail::evaluate_members(r.model, c, r.dataset, r.name, r.run, r.device, print_table,
                             detail::member_setups(r.run, r.data));
  }
  if (!noises.empty()) {
    detail::evaluate_robustness(r.model, c, r.data, r.dataset, r.name, r.run, r.device, print_table, oos, serving,
                                metrics, noises);
  }
  detail::write_html_report(r.run);  // report.json changed
  return metrics;
}

CalibrateRunResult calibrate_run(const std::string& run_dir, const std::string& split_or_file,
                                 bool fit_temperature, const OosShareOptions& share) {
  OpenedRun r = open_run(run_dir, split_or_file);
  if (r.dataset->size() == 0) throw DataError(r.manifest_path, 0, "no sample to calibrate on");
  r.load_model();
  Config& c = r.config;
  OosSetup oos = oos_setup(c, r.data.labels);
  std::string share_from;
  if (share.share != -1 || !share.estimate_from.empty()) {
    const char* option = share.share != -1 ? "--oos-share" : "--oos-share-from";
    if (share.share != -1 && !share.estimate_from.empty()) {
      throw ConfigError("", "--oos-share", 0, "give the out-of-scope share or a manifest to estimate it on, not both");
    }
    if (c.calibration.method != "split" || !fit_temperature) {
      throw ConfigError(c.source, "calibration.method", 0,
                        std::string(option) + " sets the out-of-scope share of split calibration; the run's config "
                        "says calibration.method: " + c.calibration.method);
    }
    if (share.share != -1) {
      if (!(share.share > 0 && share.share < 1)) {
        throw ConfigError("", "--oos-share", 0, "must lie in (0, 1), found " + std::to_string(share.share));
      }
      c.calibration.oos_share = share.share;
      share_from = "--oos-share";
    } else {
      // The share of the unlabelled traffic, under the calibration fitted on the split.
      if (!fs::exists(share.estimate_from)) throw DataError(share.estimate_from, 0, "manifest does not exist");
      auto manifest = read_manifest(share.estimate_from, manifest_read_options(c, false));
      // No label map: the samples are unlabelled traffic, whatever labels the manifest holds.
      const auto traffic = std::make_shared<MultimodalDataset>(std::move(manifest), nullptr, r.data.tokenizer,
                                                               dataset_options(c));
      detail::report_skipped(*traffic);
      if (traffic->size() == 0) throw DataError(share.estimate_from, 0, "no sample to estimate the out-of-scope share on");
      const auto predict = [&](const std::shared_ptr<const MultimodalDataset>& d) {
        auto loader = make_loader(c, d, /*training=*/false);
        return collect_predictions(r.model, *loader, r.device, parse_precision(c.runtime.precision), 0);
      };
      const auto fit = fit_split(predict(r.dataset), c, oos, split_or_file).split;
      const auto t = predict(traffic);
      c.calibration.oos_share = estimate_oos_share(logits_from_probabilities(to_doubles(t.probs)), t.probs.size(1), fit);
      share_from = "estimated on " + share.estimate_from;
      log::info("calibration", "out-of-scope share " + std::to_string(c.calibration.oos_share) + " " + share_from +
                                   " (" + std::to_string(traffic->size()) + " samples)");
    }
  }
  if (!fit_temperature) remove_calibration(r.run);
  // The mahalanobis score fits on the training split again: `tune` calibrates its new weights
  // here.
  std::shared_ptr<const MultimodalDataset> train;
  if (oos.needs_features()) {
    if (c.data.train.empty()) throw ConfigError(c.source, "oos.score", 0, "mahalanobis fits on data.train, which is not set");
    train = detail::read_split(c, r.data, c.data.train, oos.label);
  }
  // Fitted on: the split's name, or the manifest's path as given.
  const auto fitted = detail::fit_run_serving(r.model, c, r.run, train, r.dataset, r.device, split_or_file,
                                              fit_temperature, oos);
  const ServingSetup& s = fitted.serving;
  const Predictions& p = fitted.val;
  CalibrateRunResult result;
  auto written = load_calibration(r.run);
  if (!share_from.empty()) {
    written.split.share_from = share_from;
    save_calibration(r.run, written);
  }
  result.fit = written.fit;
  result.method = written.method;
  result.split = written.split;
  const auto labels = to_vector(p.labels);
  result.before = calibration_metrics(to_doubles(p.probs), p.probs.size(1), labels);
  result.after =
      calibration_metrics(to_doubles(calibrated(p.probs, s.calibration)), p.probs.size(1), labels);
  result.min_confidence = s.thresholds.min_confidence;
  result.clarify_margin = s.thresholds.clarify_margin;
  if (oos.thresholded) {
    result.oos_score = oos.score;
    result.oos_threshold = oos.threshold;
  }
  return result;
}

}  // namespace mmintent
