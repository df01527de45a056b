#include "mmintent/app/tune.h"

#include "steps.h"

#include "mmintent/app/logging.h"
#include "mmintent/app/run.h"
#include "mmintent/core/log.h"
#include "mmintent/data/feedback.h"
#include "mmintent/evaluation/calibration.h"
#include "mmintent/error.h"
#include "mmintent/run/serving.h"
#include "mmintent/run/setup.h"
#include "mmintent/training/device.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/loss.h"
#include "mmintent/training/predictions.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace mmintent {
namespace fs = std::filesystem;
using detail::check_out_dir;
using detail::is_within;
using detail::normalised;
namespace {

/// Freezes `module`: no gradients, and batch-norm statistics that no longer move (momentum 0),
/// so it leaves the tune exactly as it entered it.
void freeze(torch::nn::Module& module) {
  for (auto& p : module.parameters()) p.set_requires_grad(false);
  for (const auto& m : module.modules()) {
    if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(m)) bn->options.momentum(0.0);
    if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm1dImpl>(m)) bn->options.momentum(0.0);
  }
}

/// tune.method head: freezes every modality's encoder.
void freeze_encoders(IntentClassifier& model) {
  for (const auto& child : model->named_children()) {
    const std::string& key = child.key();  // "<modality>_encoder" (models/intent_classifier.h)
    if (key.size() < 8 || key.compare(key.size() - 8, 8, "_encoder") != 0) continue;
    freeze(*child.value());
  }
}

/// How a model sees the held-out log: its calibrated probabilities [N*K] and
/// the most probable class of each sample, in the data set's order.
struct PolicyView {
  int64_t num_classes = 0;
  std::vector<double> probs;
  std::vector<int64_t> greedy;
};

PolicyView policy_view(IntentClassifier& model, std::shared_ptr<const MultimodalDataset> data,
                       const Config& c, const c10::Device& device, const CalibrationFile& calibration) {
  auto loader = make_loader(c, data, /*training=*/false);
  const auto p = collect_predictions(model, *loader, device, parse_precision(c.runtime.precision));
  const auto probs = p.probs.to(torch::kDouble).contiguous();
  PolicyView v;
  v.num_classes = probs.size(1);
  const int64_t n = data->size(), K = v.num_classes;
  v.probs.assign(static_cast<size_t>(n * K), 0.0);
  v.greedy.assign(static_cast<size_t>(n), -1);
  for (int64_t j = 0; j < probs.size(0); ++j) {
    const int64_t i = p.indices[j].item<int64_t>();
    std::vector<double> row(probs[j].data_ptr<double>(), probs[j].data_ptr<double>() + K);
    row = calibrate_probabilities(calibration, row, K);
    std::copy(row.begin(), row.end(), v.probs.begin() + i * K);
    v.greedy[static_cast<size_t>(i)] = std::max_element(row.begin(), row.end()) - row.begin();
  }
  return v;
}

/// The logged outcomes of `held` seen from the policy that shows the most probable class of
/// `view`, with that model's calibrated probabilities as the reward model (doubly robust).
std::vector<LoggedOutcome> outcomes(const MultimodalDataset& held, const PolicyView& view) {
  std::vector<LoggedOutcome> out;
  const int64_t K = view.num_classes;
  for (int64_t i = 0; i < held.size(); ++i) {
    LoggedOutcome o;
    const int64_t shown = held.shown(i), greedy = view.greedy[static_cast<size_t>(i)];
    o.reward = held.label(i) >= 0 && held.label(i) == shown ? 1.0 : 0.0;
    o.propensity = held.propensity(i);
    o.target = greedy == shown ? 1.0 : 0.0;
    o.model_reward_logged = std::clamp(view.probs[static_cast<size_t>(i * K + shown)], 0.0, 1.0);
    o.model_reward_policy = std::clamp(view.probs[static_cast<size_t>(i * K + greedy)], 0.0, 1.0);
    out.push_back(o);
  }
  return out;
}

nlohmann::json estimate_json(const OffPolicyEstimate& e) {
  return {{"value", e.value}, {"std_error", e.std_error}, {"ci95", {e.lower, e.upper}},
          {"effective_samples", e.effective_samples}};
}

std::string estimate_text(const OffPolicyEstimate& e) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.4f [%.4f, %.4f]", e.value, e.lower, e.upper);
  return buf;
}

}  // namespace

TuneRunResult tune_from_feedback(const std::string& run_dir, const TuneOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const RunDirectory base(normalised(run_dir));
  const RunDirectory out(normalised(options.out_dir));
  base.require_finished();  // the base run's config, labels and final weights
  if (base.has_ensemble()) {
    throw CheckpointError("'" + base.str() + "' is an ensemble run: tune its members (ensemble.json lists them), "
                          "then make the ensemble of the tuned runs again");
  }
  if (base.has_int8()) {
    throw CheckpointError("'" + base.str() + "' has int8 weights (mmintent quantize): tune the float run it was "
                          "quantised from (quantize.json names it), then quantise the tuned run");
  }
  if (options.out_dir.empty()) throw ConfigError("", "--out", 0, "a new run directory is required");
  if (is_within(out.path(), base.path()) || is_within(base.path(), out.path())) {
    throw ConfigError("", "--out", 0,
                      "'" + out.str() + "' must be a new directory outside the run being tuned ('" +
                          base.str() + "'): tune never changes the old run");
  }

  // 1. The old run's config with the overrides; the new run writes elsewhere.
  Config c = base.load_config(options.overrides);
  c.output.dir = out.str();
  c.output.overwrite = options.overwrite;
  configure_runtime(c);

  // 2. Read and check everything before writing anything.
  const std::string method = c.tune.freeze_encoders ? "head" : c.tune.method;
  std::string base_weights_sha256;
  if (method == "lora") {
    if (base.has_adapter()) {
      throw ConfigError("", "tune.method", 0, "'" + base.str() + "' is itself an adapter run: an adapter over an "
                        "adapter is not supported; 'mmintent merge " + base.str() + " --out DIR' makes plain "
                        "weights of it to tune");
    }
    base_weights_sha256 = base.weights_digest();  // the weights the adapter will be trained over
  }
  RunData data = load_run_data(base, c);
  if (method == "lora") {
    try {
      LowRankAdapter(*build_model(c, data), c.tune.lora);  // the targets select a weight of this model
    } catch (const c10::Error& e) {
      throw ConfigError("", "tune.lora.targets", 0, e.what_without_backtrace());
    }
  }
  FeedbackReadOptions fo;
  fo.use_text = c.model.uses("text");
  fo.use_image = c.model.uses("image");
  fo.allow_missing_text = c.data.allow_missing_text;
  fo.allow_missing_image = c.data.allow_missing_image;
  const auto mopts = manifest_read_options(c, /*require_label=*/true);
  fo.plugins = mopts.fields.plugins;
  fo.allow_missing_plugins = mopts.allow_missing_plugins;
  fo.path_inputs = mopts.path_inputs;
  const FeedbackLog whole_log = read_feedback(options.feedback, data.labels, fo);
  for (const auto& s : whole_log.skipped) log::warn("tune", "skipped " + s);
  const auto objective = parse_objective(c.tune.objective);
  const bool off_policy = objective != LossOptions::Objective::supervised;
  if ((off_policy || c.tune.holdout > 0) &&
      whole_log.with_propensity < static_cast<int64_t>(whole_log.records.size())) {
    const auto it = std::find_if(whole_log.records.begin(), whole_log.records.end(),
                                 [](const FeedbackRecord& r) { return r.propensity <= 0; });
    throw DataError(options.feedback, it->line,
                    std::string(off_policy ? "tune.objective: " + c.tune.objective : "tune.holdout") +
                        " needs a 'propensity' on every record (the probability with which the "
                        "product showed 'predicted', as `mmintent predict` and the server log it); "
                        "this record has none (" + std::to_string(whole_log.with_propensity) + " of " +
                        std::to_string(whole_log.records.size()) + " have one)");
  }
  const FeedbackSplit split = split_feedback(whole_log, c.tune.holdout, static_cast<uint64_t>(c.runtime.seed));
  const FeedbackLog& log_records = split.kept;
  if (log_records.records.empty()) {
    throw DataError(options.feedback, 0, "tune.holdout " + std::to_string(c.tune.holdout) + " leaves no record to train on");
  }
  if (c.tune.holdout > 0 && split.held_out.records.empty()) {
    throw DataError(options.feedback, 0, "tune.holdout " + std::to_string(c.tune.holdout) +
                                             " held out no record (" + std::to_string(whole_log.records.size()) +
                                             " in the log): raise it, or set it to 0");
  }
  const auto dopts = dataset_options(c);
  auto feedback = std::make_shared<MultimodalDataset>(feedback_manifest(log_records), &data.labels,
                                                      data.tokenizer, dopts);
  if (feedback->size() == 0) throw DataError(options.feedback, 0, "no feedback sample is left");
  std::shared_ptr<MultimodalDataset> held_out;
  if (!split.held_out.records.empty()) {
    held_out = std::make_shared<MultimodalDataset>(feedback_manifest(split.held_out), &data.labels,
                                                   data.tokenizer, dopts);
  }

  std::shared_ptr<MultimodalDataset> replay;
  if (c.tune.replay_ratio > 0) {
    Manifest m = read_manifest(c.data.train, mopts);
    if (!c.oos.label.empty() && c.oos.method == "threshold") {
      auto& r = m.records;  // the threshold method never trains on out-of-scope samples
      r.erase(std::remove_if(r.begin(), r.end(), [&](const Record& x) { return x.label == c.oos.label; }), r.end());
    }
    replay = std::make_shared<MultimodalDataset>(std::move(m), &data.labels, data.tokenizer, dopts);
  }
  if (!c.data.val.empty()) {
    data.val = std::make_shared<MultimodalDataset>(read_manifest(c.data.val, mopts), &data.labels,
                                                   data.tokenizer, dopts);
  }

  // 3. Everything checked: the new run directory.
  check_out_dir(out.path(), options.overwrite);
  setup_logging("", out.log_file().string());
  log::info("tune", "tuning " + base.str() + " on " + options.feedback + " into " + out.str());
  if (data.tokenizer) out.save_tokenizer(base.tokenizer_file());
  out.save_labels(data.labels);
  out.save_config(c);

  // A rerun over an old --out: no weights of another kind are left to be read.
  out.remove_served_weights();

  // 4. The old weights: all trained (full); the encoders frozen (head); or all frozen, with a
  //    low-rank adapter over them that alone is trained (lora).
  const auto device = resolve_device(c.runtime.device);
  torch::manual_seed(static_cast<uint64_t>(c.runtime.seed));
  auto model = load_run_model(base, c, data, device);
  PolicyView base_view;
  if (held_out) base_view = policy_view(model, held_out, c, device, load_serving(base, c).calibration);
  LowRankAdapter adapter{nullptr};
  if (method == "head") freeze_encoders(model);
  if (method == "lora") {
    freeze(*model);
    adapter = LowRankAdapter(*model, c.tune.lora);
    model->attach_adapter(adapter);
  }
  TuneRunResult result;
  result.run_dir = out.str();
  for (const auto& p : model->named_parameters()) {
    if (p.key().rfind("lora.", 0) != 0) result.parameters += p.value().numel();  // the model's own
    if (p.value().requires_grad()) result.trainable_parameters += p.value().numel();
  }

  // 5. Train on feedback + replay with the run's Trainer.
  FeedbackReplayOptions ro;
  ro.batch_size = c.tune.batch_size;
  ro.replay_ratio = c.tune.replay_ratio;
  ro.keep_class_mix = c.tune.replay_mix == "training";
  ro.seed = static_cast<uint64_t>(c.runtime.seed);
  if (c.data.augment.enabled) ro.augment = std::make_shared<AugmentOptions>(c.data.augment);
  FeedbackReplaySource source(feedback, replay, ro);
  result.accepted = log_records.accepted;  // the records trained on (not the held-out ones)
  result.corrected = log_records.corrected;
  result.rejected = log_records.rejected;
  result.replay_per_epoch = source.replay_per_pass();
  nlohmann::json provenance{{"base_run", base.str()},
                            {"feedback", normalised(options.feedback).string()},
                            {"feedback_samples", feedback->size()},
                            {"accepted", result.accepted},
                            {"corrected", result.corrected},
                            {"rejected", result.rejected},
                            {"replay_per_epoch", result.replay_per_epoch},
                            {"replay_mix", c.tune.replay_mix},
                            {"objective", c.tune.objective},
                            {"method", method},
                            {"held_out", held_out ? held_out->size() : 0},
                            {"trainable_parameters", result.trainable_parameters},
                            {"parameters", result.parameters}};
  if (adapter) {
    provenance["adapter"] = {{"rank", c.tune.lora.rank()},
                             {"alpha", c.tune.lora.alpha()},
                             {"targets", c.tune.lora.targets()},
                             {"adapted_weights", adapter->targets().size()},
                             {"adapted_parameters", adapter->adapted_parameters()},
                             {"base_weights_sha256", base_weights_sha256}};
  }
  if (!source.replay_per_class().empty()) {
    auto& per_class = provenance["replay_per_class"] = nlohmann::json::object();
    const auto& counts = source.replay_per_class();
    for (size_t k = 0; k < counts.size(); ++k) {
      if (counts[k] == 0) continue;
      per_class[k < static_cast<size_t>(data.labels.size()) ? data.labels.name(static_cast<int64_t>(k))
                                                            : std::string("(unlabelled)")] = counts[k];
    }
  }
  out.write_atomically(out.tune_file(), provenance.dump(2) + "\n");
  log::info("tune", "feedback: " + std::to_string(result.accepted) + " accepted, " +
                        std::to_string(result.corrected) + " corrected, " +
                        std::to_string(result.rejected) + " rejected; replaying " +
                        std::to_string(result.replay_per_epoch) + " training samples per epoch; " +
                        "training " + std::to_string(result.trainable_parameters) + " of " +
                        std::to_string(result.parameters) + " parameters");

  TrainerOptions t = c.trainer_options();
  t.files = out.trainer_files();
  if (adapter) {
    // The run keeps the adapter alone (saved below), not a copy of the base's weights.
    t.files.final_weights.clear();
    t.files.best_checkpoint.clear();
    t.files.last_checkpoint.clear();
  }
  t.epochs = c.tune.epochs;
  t.optimizer.lr = c.tune.lr;
  t.scheduler = SchedulerOptions{};
  t.scheduler.type = c.tune.scheduler;
  t.loss.rejection_weight = c.tune.rejection_weight;
  t.loss.objective = objective;
  t.loss.max_inverse_propensity = c.tune.clip;
  t.loss.baseline = c.tune.baseline;
  t.early_stopping.min_epochs = std::min(t.early_stopping.min_epochs, t.epochs);
  // Adversarial training (train.adversarial) is the training run's: tuning learns from
  // feedback without it.
  t.adversarial = AdversarialOptions{};
  Trainer trainer(model, t);
  auto val_loader = data.val ? make_loader(c, data.val, /*training=*/false) : nullptr;
  result.fit = trainer.fit(source, val_loader.get());
  if (adapter) {
    AdapterManifest manifest;
    manifest.base_run = base.str();
    manifest.base_run_relative = fs::relative(base.path(), out.path()).string();
    manifest.base_weights_sha256 = base_weights_sha256;
    manifest.options = c.tune.lora;
    manifest.targets = adapter->targets();
    manifest.parameters = adapter->adapter_parameters();
    out.save_adapter(*adapter, manifest);
    std::error_code ec;
    const auto bytes = fs::file_size(out.adapter_file(), ec);
    log::info("tune", "adapter: rank " + std::to_string(c.tune.lora.rank()) + " on " +
                          std::to_string(adapter->targets().size()) + " weights, " +
                          std::to_string(manifest.parameters) + " parameters, " + out.adapter_file().string() + " " +
                          std::to_string(bytes) + " bytes, over " + base.weights_file().string() + " (" +
                          base_weights_sha256.substr(0, 12) + ")");
  }

  // 6. What the run serves besides its weights, fitted on val for the tuned weights as `train`
  //    fits it (calibration.json, oos.json, decision.json); then the reports, as `eval` makes
  //    them from model.pt.
  if (data.val) {
    calibrate_run(result.run_dir, "val", detail::calibrates(c));
  } else {
    // Nothing is chosen without val: the config's method and fixed threshold.
    save_oos(out, oos_setup(c, data.labels));
  }
  // 6b. The off-policy estimate on the held-out log: the tuned model's final weights (those
  //     model.pt holds, with the calibration just fitted) against the base run's, each showing
  //     its most probable intent.
  if (held_out) {
    auto tuned = load_run_model(out, c, data, device);
    OffPolicyReport r;
    r.held_out = held_out->size();
    const auto base_log = outcomes(*held_out, base_view);
    const auto tuned_log =
        outcomes(*held_out, policy_view(tuned, held_out, c, device, load_serving(out, c).calibration));
    for (const auto& o : base_log) r.logged_reward += o.reward / static_cast<double>(base_log.size());
    r.base_ips = ips_estimate(base_log);
    r.base_snips = snips_estimate(base_log);
    r.tuned_ips = ips_estimate(tuned_log);
    r.tuned_snips = snips_estimate(tuned_log);
    r.base_dr = dr_estimate(base_log);
    r.tuned_dr = dr_estimate(tuned_log);
    std::vector<long> lines;
    for (const auto& record : split.held_out.records) lines.push_back(record.line);
    provenance["off_policy"] = {{"held_out", r.held_out},
                                {"held_out_lines", lines},
                                {"logged_reward", r.logged_reward},
                                {"policy", "the most probable intent"},
                                {"reward_model", "the evaluated model's calibrated probability of the intent (dr)"},
                                {"base", {{"ips", estimate_json(r.base_ips)}, {"snips", estimate_json(r.base_snips)},
                                          {"dr", estimate_json(r.base_dr)}}},
                                {"tuned", {{"ips", estimate_json(r.tuned_ips)}, {"snips", estimate_json(r.tuned_snips)},
                                           {"dr", estimate_json(r.tuned_dr)}}}};
    out.write_atomically(out.tune_file(), provenance.dump(2) + "\n");
    log::info("tune", "off-policy estimate of the reward on " + std::to_string(r.held_out) +
                          " held-out records (logged " + std::to_string(r.logged_reward) +
                          ", tuned model's greedy policy): IPS " + estimate_text(r.tuned_ips) + ", SNIPS " +
                          estimate_text(r.tuned_snips) + ", DR " + estimate_text(r.tuned_dr) + "; base IPS " +
                          estimate_text(r.base_ips) + ", SNIPS " + estimate_text(r.base_snips) + ", DR " +
                          estimate_text(r.base_dr));
    result.off_policy = r;
  }

  detail::write_learning_curve(out);
  for (const auto& split : c.eval.splits) {
    result.metrics[split] = evaluate_run(result.run_dir, split, options.print_tables);  // report.html too
  }
  if (c.eval.splits.empty()) detail::write_html_report(out);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info("tune", "finished in " + std::to_string(static_cast<int64_t>(secs)) + " s; reports in " +
                        result.run_dir);
  return result;
}

void merge_adapter_run(const std::string& run_dir, const std::string& out_dir, bool overwrite) {
  const RunDirectory run(normalised(run_dir));
  run.require_finished();
  if (!run.has_adapter()) {
    throw CheckpointError("'" + run.str() + "' is not an adapter run (it has no adapter.json): its model.pt is "
                          "plain weights already");
  }
  if (out_dir.empty()) throw ConfigError("", "--out", 0, "a new run directory is required");
  const RunDirectory out(normalised(out_dir));
  if (is_within(out.path(), run.path()) || is_within(run.path(), out.path())) {
    throw ConfigError("", "--out", 0, "'" + out.str() + "' must be a new directory outside '" + run.str() + "'");
  }
  // Everything read and checked (the base found, its weights the adapter's) before writing.
  Config c = run.load_config();
  c.output.dir = out.str();
  const RunData data = load_run_data(run, c);
  const c10::Device cpu(c10::kCPU);
  const auto model = load_run_model(run, c, data, cpu);
  check_out_dir(out.path(), overwrite);
  out.remove_served_weights();
  out.save_config(c);
  out.save_labels(data.labels);
  if (data.tokenizer) out.save_tokenizer(run.tokenizer_file());
  // What serving reads besides the weights, and where the run came from.
  for (const auto& [from, to] : {std::pair{run.calibration_file(), out.calibration_file()},
                                 std::pair{run.oos_file(), out.oos_file()},
                                 std::pair{run.oos_mahalanobis_file(), out.oos_mahalanobis_file()},
                                 std::pair{run.decision_file(), out.decision_file()},
                                 std::pair{run.tune_file(), out.tune_file()}}) {
    std::error_code ec;
    if (fs::exists(from, ec)) fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  }
  save_checkpoint(out.weights_file().string(), *model, nullptr, TrainingState{}, nullptr, cpu);
  log::info("merge", "merged the adapter of " + run.str() + " into " + out.weights_file().string());
}

}  // namespace mmintent
