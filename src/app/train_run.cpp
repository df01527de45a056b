// `train`: a whole run from a config. One TrainingRun object walks the phases in order; nothing
// is written into the run directory before the config and all the data have been checked.
#include "mmintent/app/run.h"

#include "mmintent/app/logging.h"
#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/policy/rewrite.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/device.h"
#include "mmintent/training/distill.h"
#include "mmintent/training/feature_stats.h"
#include "mmintent/training/optimization.h"
#include "steps.h"

#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

namespace mmintent {
namespace fs = std::filesystem;
namespace {

/// Checks that `dir` can serve as a run directory; with `create`, makes it and probes a write.
void check_run_dir(const fs::path& dir, bool must_be_empty, bool create) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw ConfigError("", "output.dir", 0, "'" + dir.string() + "' exists and is not a directory");
  }
  if (must_be_empty && fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    throw ConfigError("", "output.dir", 0,
                      "run directory '" + dir.string() +
                          "' is not empty; choose another output.dir, set output.numbered=true (a new "
                          "DIR-2, DIR-3, ...) or output.overwrite=true, or resume with --resume auto");
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

class TrainingRun {
 public:
  TrainingRun(const Config& config, const TrainRunOptions& options)
      : c_(config),
        options_(options),
        run_(fs::absolute(config.output.dir)),
        resuming_(!options.resume.empty()),
        // Data-parallel: every rank reads and checks the data; rank 0 alone writes.
        comm_(options.communicator && options.communicator->world_size() > 1 ? options.communicator.get()
                                                                             : nullptr),
        rank_(comm_ ? comm_->rank() : 0),
        world_size_(comm_ ? comm_->world_size() : 1),
        writer_(rank_ == 0),
        tag_(comm_ ? "rank " + std::to_string(rank_) : "") {}

  TrainRunResult run() {
    const auto t0 = std::chrono::steady_clock::now();
    configure_runtime(c_);
    if (!writer_) setup_logging("warn", "", tag_);  // other ranks: warnings and errors, on stderr only
    read_data();
    if (writer_ && c_.output.numbered && !resuming_) choose_numbered_dir();
    // Refuse an unusable run directory early, but create nothing yet.
    if (writer_) check_run_dir(run_.path(), must_be_empty(), /*create=*/false);
    prepare_tokenizer();
    build_datasets();
    prepare_teacher();
    check_resume_point();
    if (writer_) write_run_files();
    TrainRunResult result;
    result.run_dir = run_.str();
    Trainer trainer = make_trainer();
    result.fit = train(trainer);
    if (!writer_) return result;  // rank 0 evaluates and writes the reports
    evaluate(trainer, result);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::info("run", "finished in " + std::to_string(static_cast<int64_t>(secs)) + " s; reports in " +
                         result.run_dir);
    summarise_skipped();
    return result;
  }

 private:
  bool must_be_empty() const { return !c_.output.overwrite && !resuming_; }
  /// output.numbered: a non-empty output.dir becomes the first free DIR-2, DIR-3, ...
  void choose_numbered_dir() {
    if (world_size_ > 1) {
      throw ConfigError("", "output.numbered",
                        0, "is not supported with several processes (each would choose its own "
                           "directory); set output.dir to a new directory");
    }
    std::error_code ec;
    const fs::path base = run_.path();
    if (!fs::exists(base, ec) || (fs::is_directory(base, ec) && fs::is_empty(base, ec))) return;
    for (int n = 2;; ++n) {
      const fs::path candidate = base.string() + "-" + std::to_string(n);
      if (!fs::exists(candidate, ec) || (fs::is_directory(candidate, ec) && fs::is_empty(candidate, ec))) {
        log::info("run", "output.numbered: " + base.string() + " is not empty; this run goes to " +
                             candidate.string());
        run_ = RunDirectory(candidate);
        return;
      }
    }
  }
  /// The checkpoint --resume names ("auto": the run's last.pt).
  fs::path resume_checkpoint() const {
    return options_.resume == "auto" ? run_.last_checkpoint() : fs::path(options_.resume);
  }
  /// --resume auto before the first epoch ended: nothing to continue.
  bool nothing_to_resume() const {
    return options_.resume == "auto" && !fs::exists(run_.last_checkpoint());
  }
  std::vector<std::pair<std::string, std::shared_ptr<const MultimodalDataset>>> splits() const {
    return {{"train", data_.train}, {"val", data_.val}, {"test", data_.test}};
  }

  /// Reads and checks the manifests and the labels before anything is written.
  void read_data() {
    const auto& c = c_;
    const auto mopts = manifest_read_options(c, /*require_label=*/true);
    train_manifest_ = read_manifest(c.data.train, mopts);
    auto& train_manifest = train_manifest_;
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
    auto& data = data_;
    if (resuming_ && fs::exists(run_.labels_file())) {
      data.labels = run_.load_labels();  // the resumed run's own class order
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
    oos_ = oos_setup(c, data.labels);
    Rewriter(c.rewrite, data.labels.names(), c.source);  // rewrite templates name known intents
    if (!c.data.val.empty()) val_manifest_ = read_manifest(c.data.val, mopts);
    if (!c.data.test.empty()) test_manifest_ = read_manifest(c.data.test, mopts);
    if (detail::calibrates(c) && c.calibration.method == "split" && !c.data.val.empty()) {
      // Refused before training, not after it: split calibration fits on both kinds of sample.
      const auto& v = val_manifest_.records;
      const auto oos = std::count_if(v.begin(), v.end(), [&](const Record& x) { return x.label == c.oos.label; });
      if (oos == 0 || oos == static_cast<std::ptrdiff_t>(v.size())) {
        throw DataError(c.data.val, 0, "calibration.method: split fits on out-of-scope ('" + c.oos.label +
                                           "') and in-scope samples; the validation split has " + std::to_string(oos) +
                                           " of " + std::to_string(v.size()) + " out of scope");
      }
    }
  }

  /// The tokenizer: reused when resuming, given, or trained on the training texts into a
  /// temporary folder (moved into the run directory once all the data has been checked).
  void prepare_tokenizer() {
    const auto& c = c_;
    auto& data = data_;
    const auto tok_path = run_.tokenizer_file();
    if (c.model.uses("text") && writer_) {
      if (resuming_ && fs::exists(tok_path)) {
        data.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(tok_path.string()));
      } else if (!c.data.text.tokenizer.empty()) {
        data.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(c.data.text.tokenizer));
      } else {
        std::vector<std::string> texts;
        for (const auto& r : train_manifest_.records) texts.push_back(r.text);
        log::info("data", "training a sentencepiece tokenizer (" + c.data.text.train.model_type +
                              ", vocab " + std::to_string(c.data.text.train.vocab_size) + ") on " +
                              std::to_string(texts.size()) + " texts");
        tok_scratch_.emplace();
        data.tokenizer = std::make_shared<Tokenizer>(
            Tokenizer::train(texts, (tok_scratch_->path() / "tokenizer").string(), c.data.text.train));
      }
    }
    if (c.model.uses("text") && comm_) {
      // Every rank tokenises with rank 0's tokenizer (trained, given or resumed), whatever its
      // own host has.
      std::string bytes;
      if (writer_) {
        std::ifstream in(data.tokenizer->model_path(), std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      }
      bytes = broadcast_bytes(*comm_, bytes, 0);
      if (!writer_) {
        tok_scratch_.emplace();
        const auto file = tok_scratch_->path() / "tokenizer.model";
        std::ofstream(file, std::ios::binary) << bytes;
        data.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(file.string()));
      }
    }
  }

  /// Datasets: labels checked, texts tokenised, images decoded once; empty splits refused.
  void build_datasets() {
    const auto& c = c_;
    auto& data = data_;
    auto dopts = dataset_options(c);
    dopts.check_images = true;  // without the cache too: bad images are found before training
    data.train = std::make_shared<MultimodalDataset>(std::move(train_manifest_), &data.labels, data.tokenizer, dopts);
    if (!c.data.val.empty()) data.val = std::make_shared<MultimodalDataset>(std::move(val_manifest_), &data.labels, data.tokenizer, dopts);
    if (!c.data.test.empty()) data.test = std::make_shared<MultimodalDataset>(std::move(test_manifest_), &data.labels, data.tokenizer, dopts);
    for (const auto& d : {data.train, data.val, data.test}) {
      if (d) detail::report_skipped(*d, /*max_listed=*/10);
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
  }

  /// A resumed run's checkpoint must fit the model and optimizer this config builds: checked
  /// now, so that a refused --resume (another architecture, a truncated file) leaves the run
  /// directory as it was.
  void check_resume_point() {
    if (!resuming_ || nothing_to_resume()) {
      if (!c_.model.init.from.empty()) {
        auto probe = build_model(c_, data_);
        apply_warm_start(*probe, /*log=*/false);
      }
      return;
    }
    auto probe = build_model(c_, data_);
    auto probe_optimizer = make_optimizer(probe->parameters(), c_.trainer_options().optimizer);
    load_checkpoint(resume_checkpoint().string(), *probe, probe_optimizer.get(), c10::Device(c10::kCPU),
                    /*restore_rng=*/false);
  }

  /// Everything checked: the run directory is created and written (by rank 0).
  void write_run_files() {
    check_run_dir(run_.path(), must_be_empty(), /*create=*/true);
    setup_logging("", run_.log_file().string(), tag_);
    log::info("run", "run directory " + run_.str());
    for (const auto& note : c_.adapted) log::info("config", note);
    if (data_.tokenizer && !(resuming_ && fs::exists(run_.tokenizer_file()))) {
      run_.save_tokenizer(data_.tokenizer->model_path());
      data_.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(run_.tokenizer_file().string()));
    }
    run_.save_labels(data_.labels);
    run_.save_config(c_);
    for (const auto& [name, d] : splits()) {
      if (d) run_.save_skipped(name, d->skipped());
    }
  }

  Trainer make_trainer() {
    torch::manual_seed(static_cast<uint64_t>(c_.runtime.seed));
    auto model = build_model(c_, data_);
    auto trainer_options = c_.trainer_options();
    trainer_options.files = run_.trainer_files();
    if (!writer_) trainer_options.progress = "none";
    return Trainer(model, trainer_options, comm_ ? options_.communicator : nullptr);
  }

  FitResult train(Trainer& trainer) {
    if (!resuming_ || nothing_to_resume()) {  // a resumed model has both in its checkpoint
      apply_warm_start(*trainer.model(), /*log=*/true);
      fit_feature_stats_on_train(trainer);
    }
    if (resuming_) {
      if (nothing_to_resume()) {
        // Stopped before its first epoch ended: nothing to continue, so start from the
        // beginning (same seed, same tokenizer and labels); stale metric lines go.
        log::info("run", "--resume auto: no last.pt in " + run_.str() +
                             " yet; training from the first epoch");
        std::error_code ec;
        if (writer_) fs::remove(run_.metrics_log(), ec);
        if (writer_) fs::remove(run_.steps_log(), ec);
      } else {
        trainer.resume(resume_checkpoint().string());
      }
    } else if (writer_) {
      std::error_code ec;
      fs::remove(run_.metrics_log(), ec);  // output.overwrite: a new run, new lines
      fs::remove(run_.steps_log(), ec);
      run_.remove_served_weights();  // and no weights of another kind (adapter, ensemble, int8) to read
    }
    auto train_loader = make_loader(c_, data_.train, /*training=*/true, rank_, world_size_);
    auto val_loader = data_.val ? make_loader(c_, data_.val, /*training=*/false, rank_, world_size_) : nullptr;
    if (teacher_probs_.defined()) {
      TeacherSource distilled(*train_loader, teacher_probs_);
      return trainer.fit(distilled, val_loader.get());
    }
    return trainer.fit(*train_loader, val_loader.get());
  }

  /// train.distill: the teacher run's probabilities at the distillation temperature, once per
  /// training sample (the teacher reads the same records through its own tokenizer and input
  /// settings, without augmentation), before anything is written.
  void prepare_teacher() {
    const auto& d = c_.train.distill;
    if (d.teacher.empty()) return;
    const auto t0 = std::chrono::steady_clock::now();
    const RunDirectory teacher(d.teacher);
    try {
      teacher.require_finished();
    } catch (const CheckpointError& e) {
      throw ConfigError(c_.source, "train.distill.teacher", 0, e.what());
    }
    const Config tc = teacher.load_config();
    RunData td = load_run_data(teacher, tc);
    if (td.labels.names() != data_.labels.names()) {
      throw ConfigError(c_.source, "train.distill.teacher", 0,
                        "'" + d.teacher + "' predicts other intents (" + std::to_string(td.labels.size()) +
                            " in its labels.json) than this run trains (" + std::to_string(data_.labels.size()) +
                            "): a teacher must have the same classes in the same order");
    }
    const auto device = resolve_device(c_.runtime.device);
    auto model = load_run_model(teacher, tc, td, device);
    Manifest records;
    records.path = c_.data.train;
    records.records = data_.train->records();
    auto samples = std::make_shared<MultimodalDataset>(std::move(records), &td.labels, td.tokenizer, dataset_options(tc));
    auto loader = make_loader(tc, samples, /*training=*/false);
    teacher_probs_ = teacher_probabilities(model, *loader, device, parse_precision(c_.runtime.precision),
                                           data_.train->size(), d.temperature);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char line[240];
    std::snprintf(line, sizeof line, "distilling from %s (T = %.2f, alpha = %.2f): its probabilities on %lld training samples in %.1f s",
                  d.teacher.c_str(), d.temperature, d.alpha, static_cast<long long>(data_.train->size()), secs);
    log::info("distill", line);
  }

  /// model.init: the weights taken from another run, before the first step. Also run on a
  /// probe model before the run directory is written, so a bad file or part is refused first.
  void apply_warm_start(torch::nn::Module& model, bool log) const {
    const auto& init = c_.model.init;
    if (init.from.empty()) return;
    if (!fs::exists(init.from)) {
      throw ConfigError(c_.source, "model.init.from", 0, "'" + init.from + "' does not exist (a run directory or a checkpoint file)");
    }
    if (fs::is_directory(init.from) && RunDirectory(init.from).has_adapter()) {
      throw ConfigError(c_.source, "model.init.from", 0, "'" + init.from + "' holds a low-rank adapter, not weights: " +
                                                          "'mmintent merge " + init.from + " --out DIR' makes plain weights of it");
    }
    if (fs::is_directory(init.from) && RunDirectory(init.from).has_int8()) {
      throw ConfigError(c_.source, "model.init.from", 0, "'" + init.from + "' holds int8 weights (mmintent quantize): " +
                                                          "start from the float run it was quantised from (quantize.json names it)");
    }
    const std::string file = fs::is_directory(init.from) ? RunDirectory(init.from).weights_file().string() : init.from;
    WarmStart w;
    try {
      w = warm_start(model, file, init.modules);
    } catch (const CheckpointError& e) {
      throw ConfigError(c_.source, "model.init", 0, e.what());
    }
    if (!log) return;
    std::string what = init.modules.empty() ? std::string("every matching tensor") : "";
    for (const auto& m : init.modules) what += (what.empty() ? "" : ", ") + m;
    log::info("init", "model.init: " + std::to_string(w.tensors) + " tensors (" + std::to_string(w.values) +
                          " values) of " + what + " from " + file +
                          (w.skipped.empty() ? "" : "; " + std::to_string(w.skipped.size()) + " left as initialised (not in the file or shaped differently)"));
  }

  /// data.audio.normalize global: the per-band statistics of the training split's features
  /// (without augmentation), on every rank alike, into the model before its first step.
  void fit_feature_stats_on_train(Trainer& trainer) {
    const auto& fused = c_.model.modalities;
    if (c_.data.audio.normalize != "global" || std::find(fused.begin(), fused.end(), "audio") == fused.end()) return;
    const auto t0 = std::chrono::steady_clock::now();
    auto loader = make_loader(c_, data_.train, /*training=*/false);
    const auto stats = fit_feature_stats(trainer.model(), *loader);
    if (!stats) return;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char line[200];
    std::snprintf(line, sizeof line,
                  "global normalisation fitted on %lld training clips (%lld frames) in %.1f s: band means %.2f .. %.2f",
                  static_cast<long long>(stats->samples), static_cast<long long>(stats->frames), secs,
                  stats->mean.min().item<double>(), stats->mean.max().item<double>());
    log::info("audio", line);
  }

  /// Evaluation of the final (best) weights: calibration (calibration.json), then on
  /// calibrated probabilities the out-of-scope threshold and the decision thresholds
  /// (decision.json), all fitted on val; then the reports of eval.splits.
  void evaluate(Trainer& trainer, TrainRunResult& result) {
    const auto& c = c_;
    remove_calibration(run_);  // a resumed or overwritten run refits
    const bool calibrate = detail::calibrates(c);
    const auto fitted = detail::fit_run_serving(trainer.model(), c, run_, data_.train, data_.val, trainer.device(),
                                                "val", calibrate, oos_);
    const ServingSetup& serving = fitted.serving;
    const auto& features = fitted.features;
    for (const auto& split : c.eval.splits) {
      const auto& d = split == "val" ? data_.val : data_.test;
      result.metrics[split] = detail::evaluate_split(trainer.model(), c, data_, d, split, run_, trainer.device(),
                                                     options_.print_tables, oos_, serving, features);
    }
    detail::write_learning_curve(run_);
    detail::write_html_report(run_);
  }

  /// The skipped samples once more at the end, where a user looks.
  void summarise_skipped() const {
    std::size_t skipped = 0;
    std::string per_split;
    for (const auto& [name, d] : splits()) {
      if (!d || d->skipped().empty()) continue;
      skipped += d->skipped().size();
      per_split += (per_split.empty() ? "" : ", ") + name + " " + std::to_string(d->skipped().size()) +
                   " (" + run_.skipped_file(name).filename().string() + ")";
    }
    if (skipped > 0) {
      log::warn("data", "skipped " + std::to_string(skipped) + " sample(s) in all: " + per_split +
                            " in " + run_.str());
      for (const auto& [name, d] : splits()) {
        if (d) detail::report_skipped(*d);
      }
    }
  }

  const Config& c_;
  const TrainRunOptions& options_;
  RunDirectory run_;  // output.numbered may move it before anything is written
  const bool resuming_;
  Communicator* comm_;
  const int rank_, world_size_;
  const bool writer_;
  const std::string tag_;
  RunData data_;
  OosSetup oos_;
  at::Tensor teacher_probs_;  ///< train.distill: [train samples, K], row i for sample i
  Manifest train_manifest_, val_manifest_, test_manifest_;
  std::optional<ScratchDir> tok_scratch_;
};

}  // namespace

TrainRunResult train_from_config(const Config& config, const TrainRunOptions& options) {
  if (config.ensemble.members > 1) return detail::train_ensemble(config, options);
  return TrainingRun(config, options).run();
}

}  // namespace mmintent
