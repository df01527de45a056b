#include "mmintent/inference/predictor.h"

#include "mmintent/error.h"
#include "mmintent/evaluation/calibration.h"
#include "mmintent/run/serving.h"
#include "mmintent/run/setup.h"
#include "mmintent/training/device.h"
#include "mmintent/training/precision.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>

namespace mmintent {
namespace fs = std::filesystem;

namespace {
/// splitmix64 of a ^ (b times an odd constant): 64 well-mixed bits from two values.
uint64_t mix_bits(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b * 0xD6E8FEB86659FD93ull) ^ 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

struct Predictor::Impl {
  Config config;
  RunData data;
  /// In eval mode from load() on; forward() under NoGradGuard changes no state, so concurrent
  /// predictions are safe.
  mutable IntentClassifier model{nullptr};
  c10::Device device{c10::kCPU};
  Precision precision = Precision::fp32;  ///< runtime.precision of the run
  DatasetOptions dataset_options;
  OosSetup oos;              ///< the run's out-of-scope handling (oos.json)
  int64_t oos_class = -1;    ///< the trained out-of-scope class (methods class and both), else -1
  CalibrationFile calibration;  ///< calibration.json
  DecisionThresholds thresholds;  ///< decision.json or the config
  std::optional<Rewriter> rewriter;
  double epsilon = 0;  ///< decision.explore.epsilon
  /// Exploration draws: a manifest's record draws from (runtime.seed, its line), so that
  /// `predict --manifest` is reproducible; a request from (a per-process nonce, a counter).
  uint64_t nonce = 0;
  mutable std::atomic<uint64_t> calls{0};

  std::vector<Prediction> run(Manifest manifest, int64_t top_k, uint64_t draw_base) const {
    return run(MultimodalDataset(std::move(manifest), nullptr, data.tokenizer, dataset_options), top_k, draw_base);
  }

  std::vector<Prediction> run(const MultimodalDataset& dataset, int64_t top_k, uint64_t draw_base) const {
    std::vector<Prediction> out;
    const int64_t n = dataset.size();
    const int64_t bs = std::max<int64_t>(1, config.data.loader.eval_batch_size);
    const int64_t k = std::min<int64_t>(std::max<int64_t>(1, top_k), data.labels.size());
    for (int64_t start = 0; start < n; start += bs) {
      std::vector<int64_t> idx;
      for (int64_t i = start; i < std::min(n, start + bs); ++i) idx.push_back(i);
      auto batch = dataset.collate(idx, nullptr, 0).to(device);
      torch::NoGradGuard no_grad;
      at::Tensor logits, features;
      {
        AutocastGuard autocast(device, precision);
        if (oos.needs_features()) {
          std::tie(logits, features) = model->forward_with_features(batch);
        } else {
          logits = model->forward(batch);
        }
      }
      logits = logits.to(torch::kCPU, torch::kFloat);
      const auto raw = torch::softmax(logits, 1).contiguous();
      const int64_t num_classes = raw.size(1);
      std::vector<double> probs(raw.data_ptr<float>(), raw.data_ptr<float>() + raw.numel());
      if (calibration.method == "split" || (calibration.method == "temperature" && calibration.temperature != 1.0)) {
        // The evaluator's computation (e.g. softmax(log p / T)), stored as float.
        probs = calibrate_probabilities(calibration, probs, num_classes);
        for (double& v : probs) v = static_cast<float>(v);
      }
      // The evaluator's rule: the arg-max is the out-of-scope class, or the score (over these
      // calibrated probabilities, the logits or the features) is under the threshold.
      std::vector<bool> rejected;
      if (oos.enabled) {
        const auto calibrated = torch::from_blob(probs.data(), {static_cast<int64_t>(idx.size()), num_classes},
                                                 torch::kDouble).to(torch::kFloat);
        rejected = oos_rejections(oos, calibrated, logits,
                                  features.defined() ? features.to(torch::kCPU, torch::kFloat) : features);
      }
      std::vector<int64_t> order(static_cast<size_t>(num_classes));
      for (int64_t b = 0; b < static_cast<int64_t>(idx.size()); ++b) {
        const double* row = probs.data() + b * num_classes;
        std::iota(order.begin(), order.end(), int64_t{0});
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t x, int64_t y) {
          return row[x] != row[y] ? row[x] > row[y] : x < y;  // ties: the arg-max (first) first
        });
        Prediction p;
        for (int64_t j = 0; j < k; ++j) {
          p.top.push_back({data.labels.name(order[j]), row[order[j]]});
        }
        if (oos.enabled) p.out_of_scope = order[0] == oos_class || rejected[static_cast<size_t>(b)];
        const int64_t i = start + b;
        const auto shown = choose_shown(order[0], num_classes, epsilon,
                                        mix_bits(draw_base, static_cast<uint64_t>(dataset.records()[i].line)));
        p.shown = IntentScore{data.labels.name(shown.intent), row[shown.intent]};
        p.propensity = shown.propensity;
        const auto d = decide(row, num_classes, p.out_of_scope, oos_class, thresholds);
        p.decision = d.decision;
        if (d.decision == Decision::clarify) {
          p.candidates = {{data.labels.name(d.first), row[d.first]},
                          {data.labels.name(d.second), row[d.second]}};
        }
        out.push_back(std::move(p));
      }
    }
    return out;
  }
};

Predictor::Predictor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Predictor::~Predictor() = default;
Predictor::Predictor(Predictor&&) noexcept = default;
Predictor& Predictor::operator=(Predictor&&) noexcept = default;

Predictor Predictor::load(const std::string& run_dir, const PredictorOptions& options) {
  const RunDirectory run(run_dir);
  run.require_finished();
  auto impl = std::make_unique<Impl>();
  impl->config = run.load_config();
  impl->data = load_run_data(run, impl->config);
  if (options.threads > 0) configure_threads(static_cast<int>(options.threads));
  impl->device = resolve_device(options.device.empty() ? impl->config.runtime.device : options.device);
  impl->precision = parse_precision(impl->config.runtime.precision);
  impl->model = load_run_model(run, impl->config, impl->data, impl->device);
  impl->model->eval();
  impl->dataset_options = dataset_options(impl->config);
  impl->dataset_options.cache_images = false;
  impl->oos = load_oos(run, impl->config, impl->data.labels);
  impl->oos_class = impl->oos.trained_class();
  const auto serving = load_serving(run, impl->config);
  check_calibration(run, serving, impl->oos);
  impl->calibration = serving.calibration;
  impl->thresholds = serving.thresholds;
  impl->rewriter.emplace(impl->config.rewrite, impl->data.labels.names(), run.config_file().string());
  impl->epsilon = options.explore_epsilon >= 0 ? options.explore_epsilon : impl->config.decision.explore.epsilon;
  if (impl->epsilon > 1) throw Error("decision.explore.epsilon must be in [0, 1], found " + std::to_string(impl->epsilon));
  impl->nonce = std::random_device{}();
  impl->nonce = (impl->nonce << 32) ^ std::random_device{}();
  return Predictor(std::move(impl));
}

Prediction Predictor::predict(const PredictInput& input, int64_t top_k) const {
  return predict_batch({input}, top_k).at(0);
}

std::vector<Prediction> Predictor::predict_batch(const std::vector<PredictInput>& inputs,
                                                int64_t top_k) const {
  Manifest m;
  m.path = "<request>";
  const auto& c = impl_->config;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& in = inputs[i];
    const long line = static_cast<long>(i + 1);
    if (c.model.uses("text") && in.text.empty() && !c.data.allow_missing_text) {
      throw DataError("<request>", line, "this model needs a text (the run was trained without allow_missing_text)");
    }
    if (c.model.uses("image") && in.image.empty() && !in.image_pixels && !c.data.allow_missing_image) {
      throw DataError("<request>", line, "this model needs an image (the run was trained without allow_missing_image)");
    }
    if (c.model.uses("audio") && in.audio.empty() && !in.audio_samples && !c.data.allow_missing_audio) {
      throw DataError("<request>", line, "this model needs audio (the run was trained without allow_missing_audio)");
    }
    for (const auto& name : c.model.modalities) {
      if (is_builtin_modality(name)) continue;
      const auto it = in.inputs.find(name);
      const auto p = c.model.plugins.find(name);
      const bool may_lack = p != c.model.plugins.end() && p->second.allow_missing();
      if ((it == in.inputs.end() || it->second.empty()) && !may_lack) {
        throw DataError("<request>", line, "this model needs a value for modality '" + name + "'");
      }
    }
    Record r;
    r.text = in.text;
    r.image = in.image_pixels ? std::string() : in.image;
    r.image_pixels = in.image_pixels;
    r.inputs = in.inputs;
    if (c.model.uses("audio") && in.audio_samples) {
      r.audio_samples = in.audio_samples;
    } else if (c.model.uses("audio") && !in.audio.empty()) {
      r.inputs["audio"] = in.audio;
    }
    r.line = line;
    m.records.push_back(std::move(r));
  }
  return impl_->run(std::move(m), top_k, mix_bits(impl_->nonce, impl_->calls.fetch_add(1)));
}

RewrittenRequest Predictor::rewrite(const PredictInput& input, const Prediction& prediction) const {
  if (prediction.top.empty()) throw Error("Predictor::rewrite: the prediction lists no intent");
  std::vector<std::pair<std::string, double>> candidates;
  for (const auto& c : prediction.candidates) candidates.emplace_back(c.intent, c.probability);
  return impl_->rewriter->rewrite(input.text, prediction.decision, prediction.top[0].intent,
                                  prediction.top[0].probability, candidates);
}

namespace {
/// The line number in a "file:line: reason" entry of Manifest::skipped or
/// MultimodalDataset::skipped for a record of `path`, or 0 when it has none.
long skipped_line(const std::string& entry, const std::string& path) {
  if (entry.compare(0, path.size() + 1, path + ":") != 0) return 0;
  try {
    return std::stol(entry.substr(path.size() + 1));
  } catch (const std::exception&) {
    return 0;
  }
}
}  // namespace

ManifestPredictions Predictor::predict_manifest(const std::string& manifest_path,
                                                const std::string& output_jsonl, int64_t top_k,
                                                bool rewrite) const {
  Manifest m = read_manifest(manifest_path, manifest_read_options(impl_->config, /*require_label=*/false));
  const std::string tmp = output_jsonl + ".tmp";
  ManifestPredictions result;
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw Error("cannot write predictions to '" + output_jsonl + "'");
    try {
      result = predict_records(std::move(m), out, top_k, rewrite);
      out.flush();
      if (!out) throw Error("cannot write predictions to '" + output_jsonl + "'");
    } catch (...) {
      out.close();
      std::error_code ec;
      fs::remove(tmp, ec);  // nothing half-written left behind
      throw;
    }
  }
  fs::rename(tmp, output_jsonl);
  return result;
}

ManifestPredictions Predictor::predict_records(Manifest m, std::ostream& out, int64_t top_k, bool rewrite) const {
  const auto& c = impl_->config;
  const std::string path = m.path;
  ManifestPredictions result;
  // Every image is decoded once before any prediction, so that with data.on_bad_sample: skip
  // an unreadable one is left out (and reported) instead of failing the batch it lands in.
  auto options = impl_->dataset_options;
  options.check_images = true;
  const MultimodalDataset dataset(std::move(m), nullptr, impl_->data.tokenizer, options);
  result.skipped = dataset.skipped();  // the manifest's skipped records, then bad images
  const auto& records = dataset.records();
  const auto scores = impl_->run(dataset, top_k, static_cast<uint64_t>(c.runtime.seed));
  result.predicted = static_cast<int64_t>(records.size());

  // One output line per record of the manifest, in line order: a prediction, or
  // {"line", "skipped": reason} for a record that was left out.
  std::vector<std::pair<long, std::string>> skipped;
  for (const auto& s : result.skipped) {
    const long line = skipped_line(s, path);
    std::string reason = s;
    if (line > 0) {
      const auto cut = s.find(": ", path.size() + 1);
      if (cut != std::string::npos) reason = s.substr(cut + 2);
    }
    skipped.emplace_back(line, std::move(reason));
  }
  std::stable_sort(skipped.begin(), skipped.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });

  {
    auto write_skipped = [&](const std::pair<long, std::string>& s) {
      nlohmann::ordered_json j;
      j["line"] = s.first;
      j["skipped"] = s.second;
      out << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
    };
    size_t next_skipped = 0;
    for (size_t i = 0; i < records.size(); ++i) {
      while (next_skipped < skipped.size() && skipped[next_skipped].first < records[i].line) {
        write_skipped(skipped[next_skipped++]);
      }
      if (rewrite) {
        nlohmann::ordered_json j;
        j["line"] = records[i].line;
        if (!records[i].label.empty()) j["label"] = records[i].label;
        PredictInput input;
        input.text = records[i].text;
        const auto r = this->rewrite(input, scores[i]);
        const auto fields = nlohmann::ordered_json::parse(to_json_line(r, *impl_->rewriter));
        for (const auto& [key, value] : fields.items()) j[key] = value;
        out << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
        continue;
      }
      nlohmann::json j;
      j["line"] = records[i].line;
      if (c.model.uses("text")) j["text"] = records[i].text;
      if (c.model.uses("image")) j["image"] = records[i].image;
      for (const auto& [name, value] : records[i].inputs) {  // plug-ins: as the manifest had them
        if (name == "audio") {  // a path
          j[name] = value;
          continue;
        }
        auto parsed = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
        j[name] = parsed.is_discarded() ? nlohmann::json(value) : parsed;
      }
      if (!records[i].label.empty()) j["label"] = records[i].label;
      j["top"] = nlohmann::json::array();
      for (const auto& s : scores[i].top) j["top"].push_back({{"intent", s.intent}, {"probability", s.probability}});
      if (impl_->oos.enabled) j["out_of_scope"] = scores[i].out_of_scope;
      j["decision"] = to_string(scores[i].decision);
      j["shown"] = scores[i].shown.intent;
      j["propensity"] = scores[i].propensity;
      if (!scores[i].candidates.empty()) {
        j["candidates"] = nlohmann::json::array();
        for (const auto& s : scores[i].candidates) {
          j["candidates"].push_back({{"intent", s.intent}, {"probability", s.probability}});
        }
      }
      out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    }
    while (next_skipped < skipped.size()) write_skipped(skipped[next_skipped++]);
  }
  return result;
}

const std::vector<std::string>& Predictor::intents() const { return impl_->data.labels.names(); }
const Config& Predictor::config() const { return impl_->config; }
double Predictor::temperature() const {
  return impl_->calibration.method == "temperature" ? impl_->calibration.temperature : 1.0;
}
DecisionThresholds Predictor::decision_thresholds() const { return impl_->thresholds; }
const Rewriter& Predictor::rewriter() const { return *impl_->rewriter; }

}  // namespace mmintent
