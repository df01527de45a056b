#include "mmintent/app/run.h"

#include "mmintent/app/logging.h"
#include "mmintent/config/loader.h"
#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/evaluation/out_of_scope.h"
#include "mmintent/evaluation/predictions.h"
#include "mmintent/evaluation/report.h"
#include "mmintent/training/device.h"

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <cstdio>
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

namespace {

/// Sets the thread pools once: LibTorch's from the config, OpenCV's off (our loader threads
/// already run in parallel; OpenCV's pool on top would oversubscribe the cores).
void configure_runtime(const Config& c) {
  cv::setNumThreads(0);
  const int threads = configure_threads(static_cast<int>(c.runtime.threads));
  const auto cores = std::max(1u, std::thread::hardware_concurrency());
  log::info("runtime", "LibTorch intra-op threads: " + std::to_string(threads) +
                           ", loader workers: " + std::to_string(c.data.loader.num_workers) +
                           ", cores: " + std::to_string(cores));
  if (static_cast<unsigned>(threads) > cores) {
    log::warn("runtime", "more LibTorch threads than cores: expect slowdowns");
  }
}

void report_skipped(const MultimodalDataset& d) {
  if (d.skipped().empty()) return;
  log::warn("data", std::to_string(d.skipped().size()) + " sample(s) of " + d.path() + " skipped:");
  for (const auto& s : d.skipped()) log::warn("data", "  skipped " + s);
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
  if (!create) return;
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

/// Chooses the out-of-scope threshold on the validation split and records it in oos.json.
void choose_threshold(IntentClassifier& model, const Config& c, const RunData& data,
                      const c10::Device& device, const fs::path& run_dir, OosSetup& oos) {
  if (!oos.threshold_method || oos.threshold >= 0) return;
  if (!data.val) throw ConfigError(c.source, "oos.threshold", 0, "choosing the threshold needs data.val");
  auto loader = make_loader(c, data.val, /*training=*/false);
  auto p = collect_predictions(model, *loader, device);
  oos.threshold = choose_oos_threshold(p.probs, to_vector(p.labels), oos.index);
  log::info("eval", "out-of-scope threshold chosen on the validation split: " + std::to_string(oos.threshold));
}

void save_oos(const fs::path& run_dir, const OosSetup& oos) {
  if (!oos.enabled) return;
  nlohmann::json j{{"label", oos.label}, {"method", oos.threshold_method ? "threshold" : "class"}};
  if (oos.threshold_method) j["threshold"] = oos.threshold;
  std::ofstream(run_dir / "oos.json") << j.dump(2) << "\n";
}

ClassificationMetrics evaluate_split(IntentClassifier& model, const Config& c, const RunData& data,
                                     const std::shared_ptr<const MultimodalDataset>& dataset,
                                     const std::string& name, const std::string& run_dir,
                                     const c10::Device& device, bool print_table,
                                     const OosSetup& oos) {
  auto loader = make_loader(c, dataset, /*training=*/false);
  auto predictions = collect_predictions(model, *loader, device);
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
                                        bool training) {
  LoaderOptions o;
  o.batch_size = training ? c.data.loader.batch_size : c.data.loader.eval_batch_size;
  o.shuffle = training && c.data.loader.shuffle;
  o.drop_last = training && c.data.loader.drop_last;
  o.num_workers = c.data.loader.num_workers;
  o.prefetch = c.data.loader.prefetch;
  o.seed = static_cast<uint64_t>(c.runtime.seed);
  if (training && c.data.augment.enabled) o.augment = std::make_shared<AugmentOptions>(c.data.augment);
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
  if (train_manifest.records.empty()) throw DataError(c.data.train, 0, "the training split is empty");
  const auto saved_labels = run_dir / "labels.json";
  if (resuming && fs::exists(saved_labels)) {
    data.labels = LabelMap::load(saved_labels.string());  // the resumed run's own class order
  } else if (!c.data.labels.empty()) {
    data.labels = LabelMap::load(c.data.labels);
  } else {
    std::vector<std::string> names;
    for (const auto& r : train_manifest.records) names.push_back(r.label);
    data.labels = LabelMap::from_labels(names);
  }
  if (data.labels.size() < 2) {
    throw DataError(c.data.train, 0, "needs at least 2 distinct labels, found " +
                                         std::to_string(data.labels.size()));
  }
  OosSetup oos = oos_setup(c, data.labels);
  Manifest val_manifest, test_manifest;
  if (!c.data.val.empty()) val_manifest = read_manifest(c.data.val, mopts);
  if (!c.data.test.empty()) test_manifest = read_manifest(c.data.test, mopts);

  // 2. Refuse an unusable run directory early, but create nothing yet.
  check_run_dir(run_dir, /*must_be_empty=*/!c.output.overwrite && !resuming, /*create=*/false);

  // 3. Tokenizer: reused when resuming, given, or trained on the training texts into a
  //    temporary folder (moved into the run directory once all the data has been checked).
  const auto tok_path = run_dir / "tokenizer.model";
  std::optional<ScratchDir> tok_scratch;
  if (c.model.uses("text")) {
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

  // 4. Datasets: labels checked, texts tokenised, images decoded once.
  const auto dopts = dataset_options(c);
  data.train = std::make_shared<MultimodalDataset>(std::move(train_manifest), &data.labels, data.tokenizer, dopts);
  if (!c.data.val.empty()) data.val = std::make_shared<MultimodalDataset>(std::move(val_manifest), &data.labels, data.tokenizer, dopts);
  if (!c.data.test.empty()) data.test = std::make_shared<MultimodalDataset>(std::move(test_manifest), &data.labels, data.tokenizer, dopts);
  for (const auto& d : {data.train, data.val, data.test}) {
    if (d) report_skipped(*d);
  }
  if (data.train->size() == 0) throw DataError(c.data.train, 0, "no training sample is left");
  if (data.val && data.val->size() == 0) throw DataError(c.data.val, 0, "the validation split is empty");
  log::info("data", "train " + std::to_string(data.train->size()) + ", val " +
                        std::to_string(data.val ? data.val->size() : 0) + ", test " +
                        std::to_string(data.test ? data.test->size() : 0) + " samples, " +
                        std::to_string(data.labels.size()) + " intents" +
                        (data.tokenizer ? ", vocabulary " + std::to_string(data.tokenizer->vocab_size()) : ""));

  // 5. Everything checked: now the run directory is created and written.
  check_run_dir(run_dir, /*must_be_empty=*/!c.output.overwrite && !resuming, /*create=*/true);
  setup_logging("info", (run_dir / "train.log").string());
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

  // 6. Model and training.
  torch::manual_seed(static_cast<uint64_t>(c.runtime.seed));
  auto model = build_model(c, data);
  Trainer trainer(model, c.trainer_options());
  if (resuming) {
    trainer.resume(options.resume == "auto" ? (run_dir / "last.pt").string() : options.resume);
  }
  auto train_loader = make_loader(c, data.train, /*training=*/true);
  auto val_loader = data.val ? make_loader(c, data.val, /*training=*/false) : nullptr;
  TrainRunResult result;
  result.run_dir = run_dir.string();
  result.fit = trainer.fit(*train_loader, val_loader.get());

  // 7. Evaluation of the final (best) weights.
  choose_threshold(trainer.model(), c, data, trainer.device(), run_dir, oos);
  save_oos(run_dir, oos);
  for (const auto& split : c.eval.splits) {
    const auto& d = split == "val" ? data.val : data.test;
    result.metrics[split] = evaluate_split(trainer.model(), c, data, d, split, result.run_dir,
                                           trainer.device(), options.print_tables, oos);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info("run", "finished in " + std::to_string(static_cast<int64_t>(secs)) + " s; reports in " +
                       result.run_dir);
  return result;
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
  auto dataset = std::make_shared<MultimodalDataset>(
      read_manifest(manifest_path, manifest_read_options(c, true)), &data.labels, data.tokenizer,
      dataset_options(c));
  report_skipped(*dataset);
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
  return evaluate_split(model, c, data, dataset, name, run_dir, device, print_table, oos);
}

}  // namespace mmintent
