// `mmintent quantize`: a run with int8 weights (app/quantize.h).
#include "mmintent/app/quantize.h"

#include "mmintent/config/loader.h"
#include "mmintent/core/digest.h"
#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/device.h"
#include "steps.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

namespace mmintent {
namespace fs = std::filesystem;
namespace {

/// Median milliseconds of one forward pass over one sample, for `a` and `b`, timed alternately
/// (a first on even samples, b first on odd ones) over the first `n` samples of `dataset`.
std::pair<double, double> median_latencies(IntentClassifier& a, IntentClassifier& b, Config c,
                                           const std::shared_ptr<const MultimodalDataset>& dataset,
                                           const c10::Device& device, int64_t n, int64_t& timed) {
  c.data.loader.eval_batch_size = 1;
  c.data.loader.num_workers = 0;
  auto loader = make_loader(c, dataset, /*training=*/false);
  std::vector<Batch> batches;
  while (static_cast<int64_t>(batches.size()) < n) {
    auto batch = loader->next();
    if (!batch) break;
    batches.push_back(batch->to(device));
  }
  timed = static_cast<int64_t>(batches.size());
  if (batches.empty()) return {0, 0};
  torch::NoGradGuard no_grad;
  a->eval();
  b->eval();
  for (size_t i = 0; i < std::min<size_t>(5, batches.size()); ++i) {  // warm-up: first-call costs
    a->forward(batches[i]);
    b->forward(batches[i]);
  }
  std::vector<double> ta, tb;
  auto time = [&](IntentClassifier& m, const Batch& batch) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto logits = m->forward(batch);
    if (logits.is_cuda()) logits.cpu();  // wait for the device
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  for (size_t i = 0; i < batches.size(); ++i) {
    if (i % 2 == 0) {
      ta.push_back(time(a, batches[i]));
      tb.push_back(time(b, batches[i]));
    } else {
      tb.push_back(time(b, batches[i]));
      ta.push_back(time(a, batches[i]));
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  };
  return {median(ta), median(tb)};
}

nlohmann::ordered_json metrics_json(const ClassificationMetrics& m, bool has_oos, double in_scope, double recall) {
  nlohmann::ordered_json j{{"accuracy", m.accuracy}, {"macro_f1", m.macro_f1}};
  if (has_oos) {
    j["in_scope_accuracy"] = in_scope;
    j["oos_recall"] = recall;
  }
  return j;
}

}  // namespace

QuantizeResult quantize_run(const QuantizeOptions& options) {
  const RunDirectory source(detail::normalised(options.run));
  source.require_finished();
  if (source.has_ensemble()) {
    throw CheckpointError("'" + source.str() + "' is an ensemble run: quantise its members one by one (ensemble.json "
                          "lists them), then make the ensemble of the int8 runs (mmintent ensemble)");
  }
  if (source.has_int8()) throw CheckpointError("'" + source.str() + "' has int8 weights already (model.int8.pt)");
  if (options.out_dir.empty()) throw ConfigError("", "--out", 0, "a new run directory is required");
  const RunDirectory out(detail::normalised(options.out_dir));
  if (detail::is_within(out.path(), source.path()) || detail::is_within(source.path(), out.path())) {
    throw ConfigError("", "--out", 0, "'" + out.str() + "' must be a new directory outside the run '" + source.str() + "'");
  }
  for (const auto& o : options.overrides) {
    const auto key = o.substr(0, o.find('='));
    if (key.rfind("model.", 0) == 0 || key.rfind("data.", 0) == 0) {
      throw ConfigError("", key, 0, "quantize keeps the run's model and inputs: '" + key + "' cannot be overridden");
    }
  }

  // Everything read and the float model loaded before anything is written.
  Config c = source.load_config(options.overrides);
  c.output.dir = out.str();
  configure_runtime(c);
  const c10::Device device = resolve_device(c.runtime.device);
  RunData data = load_run_data(source, c);
  auto float_model = load_run_model(source, source.load_config(), data, device);
  const OosSetup float_oos = load_oos(source, source.load_config(), data.labels);
  const CalibrationFile float_calibration = load_calibration(source);
  const std::string source_digest = source.weights_digest();

  detail::check_out_dir(out.path(), options.overwrite);
  out.remove_served_weights();
  for (const auto& stale : {out.calibration_file(), out.oos_file(), out.decision_file(), out.report_file()}) {
    std::error_code ec;
    fs::remove(stale, ec);
  }
  out.save_config(c);
  out.save_labels(data.labels);
  if (c.model.uses("text")) out.save_tokenizer(source.tokenizer_file());

  QuantizeResult result;
  result.run_dir = out.str();
  try {
    // The float model's size as a float weights file, beside the int8 one.
    const auto float_file = out.path() / "model.float.pt.tmp";
    save_checkpoint(float_file.string(), *float_model, nullptr, TrainingState{}, nullptr, device);
    result.float_bytes = static_cast<int64_t>(fs::file_size(float_file));
    fs::remove(float_file);
    result.weights = save_int8_weights(out.int8_weights_file().string(), *float_model);
    result.int8_bytes = static_cast<int64_t>(fs::file_size(out.int8_weights_file()));
    log::info("quantize", std::to_string(result.weights.int8_tensors) + " weight matrices of " + source.str() +
                              " as int8 in " + out.int8_weights_file().string() + " (" +
                              std::to_string(result.int8_bytes) + " bytes; float " + std::to_string(result.float_bytes) + ")");

    auto model = load_run_model(out, c, data, device);
    OosSetup oos = oos_setup(c, data.labels);
    if (!c.data.val.empty()) data.val = detail::read_split(c, data, c.data.val);
    std::shared_ptr<const MultimodalDataset> train;
    if (oos.enabled && !c.data.train.empty()) train = detail::read_split(c, data, c.data.train, oos.label);
    const bool calibrate = detail::calibrates(c);
    const auto fitted = detail::fit_run_serving(model, c, out, train, data.val, device, "val", calibrate, oos);
    const ServingSetup& serving = fitted.serving;
    const auto& features = fitted.features;
    std::shared_ptr<const MultimodalDataset> timing_split = data.val;
    for (const auto& split : c.eval.splits) {
      const auto& path = split == "val" ? c.data.val : c.data.test;
      if (path.empty()) continue;
      const auto d = split == "val" && data.val ? data.val : detail::read_split(c, data, path);
      if (!timing_split) timing_split = d;
      result.metrics[split] =
          detail::evaluate_split(model, c, data, d, split, out, device, options.print_tables, oos, serving, features);
      const auto f = detail::serve_split(float_model, c, d, device, float_calibration, float_oos);
      const auto q = detail::serve_split(model, c, d, device, serving.calibration, oos);
      QuantizeComparison cmp;
      cmp.float_metrics = f.metrics;
      cmp.int8_metrics = q.metrics;
      cmp.has_oos = f.has_oos && q.has_oos;
      cmp.float_in_scope_accuracy = f.oos.in_scope_accuracy;
      cmp.int8_in_scope_accuracy = q.oos.in_scope_accuracy;
      cmp.float_oos_recall = f.oos.oos_recall;
      cmp.int8_oos_recall = q.oos.oos_recall;
      int64_t same = 0;
      for (size_t i = 0; i < f.served.size() && i < q.served.size(); ++i) same += f.served[i] == q.served[i];
      cmp.agreement = f.served.empty() ? 0.0 : static_cast<double>(same) / static_cast<double>(f.served.size());
      result.comparison[split] = cmp;
    }
    if (timing_split && options.latency_samples > 0) {
      std::tie(result.float_latency_ms, result.int8_latency_ms) =
          median_latencies(float_model, model, c, timing_split, device, options.latency_samples, result.latency_samples);
    }
    detail::write_html_report(out);

    nlohmann::ordered_json j;
    j["source_run"] = source.str();
    j["source_run_relative"] = fs::relative(source.path(), out.path()).string();
    j["source_weights_sha256"] = source_digest;
    j["scheme"] = "int8 weights, symmetric, one scale per output row, for every weight of 2+ dimensions "
                  "(linear, recurrent, embedding, convolution); biases, norms and buffers float32; "
                  "dequantised to float32 when loaded";
    j["int8_tensors"] = result.weights.int8_tensors;
    j["int8_values"] = result.weights.int8_values;
    j["float_tensors"] = result.weights.float_tensors;
    j["float_values"] = result.weights.float_values;
    j["max_abs_weight_error"] = result.weights.max_abs_error;
    j["float_bytes"] = result.float_bytes;
    j["int8_bytes"] = result.int8_bytes;
    j["size_ratio"] = result.int8_bytes > 0 ? static_cast<double>(result.float_bytes) / static_cast<double>(result.int8_bytes) : 0.0;
    j["latency"] = {{"samples", result.latency_samples},
                    {"device", device.str()},
                    {"float_ms_median", result.float_latency_ms},
                    {"int8_ms_median", result.int8_latency_ms},
                    {"ratio", result.float_latency_ms > 0 ? result.int8_latency_ms / result.float_latency_ms : 0.0}};
    nlohmann::ordered_json splits = nlohmann::ordered_json::object();
    for (const auto& [split, cmp] : result.comparison) {
      splits[split] = {
          {"float", metrics_json(cmp.float_metrics, cmp.has_oos, cmp.float_in_scope_accuracy, cmp.float_oos_recall)},
          {"int8", metrics_json(cmp.int8_metrics, cmp.has_oos, cmp.int8_in_scope_accuracy, cmp.int8_oos_recall)},
          {"agreement", cmp.agreement}};
    }
    j["splits"] = splits;
    out.write_atomically(out.quantize_manifest(), j.dump(2) + "\n");
  } catch (...) {
    std::error_code ec;
    fs::remove(out.int8_weights_file(), ec);  // not a finished run
    fs::remove(out.quantize_manifest(), ec);
    throw;
  }
  return result;
}

}  // namespace mmintent
