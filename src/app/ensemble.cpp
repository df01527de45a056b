// `mmintent ensemble`: an ensemble run over finished runs (app/ensemble.h).
#include "mmintent/app/ensemble.h"

#include "mmintent/app/logging.h"
#include "mmintent/app/run.h"
#include "mmintent/distributed/communicator.h"

#include "mmintent/config/loader.h"
#include "mmintent/core/files.h"
#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/training/device.h"
#include "steps.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <sstream>

namespace mmintent {
namespace fs = std::filesystem;
namespace {

/// The config keys that decide what a model reads (modalities, their settings, text length,
/// out-of-scope label and method) as "dotted.key: value" lines, in to_yaml's order: members
/// must agree on all of them to share one batch.
std::vector<std::string> input_keys(const Config& c) {
  Config probe;
  probe.model.modalities = c.model.modalities;
  probe.model.plugins = c.model.plugins;
  probe.data.image = c.data.image;
  probe.data.audio = c.data.audio;
  probe.data.text.max_length = c.data.text.max_length;
  probe.oos.label = c.oos.label;
  probe.oos.method = c.oos.method;
  const std::vector<std::string> sections{"model.modalities", "model.plugins", "data.image", "data.audio",
                                          "data.text.max_length", "oos.label", "oos.method"};
  std::istringstream yaml(to_yaml(probe));
  std::vector<std::pair<size_t, std::string>> path;  // (indent, key) of the enclosing maps
  std::vector<std::string> out;
  std::string line;
  while (std::getline(yaml, line)) {
    const auto indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') continue;
    while (!path.empty() && path.back().first >= indent) path.pop_back();
    std::string body = line.substr(indent);
    std::string dotted;
    for (const auto& [i, key] : path) dotted += key + ".";
    const auto colon = body.find(':');
    if (body.rfind("- ", 0) == 0 || colon == std::string::npos) {  // a list item: part of its key's value
      dotted += body;
    } else {
      const auto key = body.substr(0, colon);
      const auto value = body.substr(colon + 1);
      if (value.find_first_not_of(' ') == std::string::npos) {  // a map or list follows
        path.emplace_back(indent, key);
        continue;
      }
      dotted += key + ":" + value;
    }
    const bool wanted = std::any_of(sections.begin(), sections.end(),
                                    [&](const std::string& s) { return dotted.rfind(s, 0) == 0; });
    if (wanted) out.push_back(dotted);
  }
  return out;
}

/// The first line where `a` and `b` differ, as "KEY: VALUE_A (FIRST) vs VALUE_B"; empty when equal.
std::string first_difference(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    const std::string x = i < a.size() ? a[i] : "(nothing)";
    const std::string y = i < b.size() ? b[i] : "(nothing)";
    if (x != y) return "'" + y + "' where the first member has '" + x + "'";
  }
  return {};
}

/// What the tokenizer turns text into: its pieces and scores (tokenizer.vocab; the .model file
/// also records where it was trained, which differs between runs of the same tokenizer).
std::string tokenizer_identity(const RunDirectory& run) {
  std::error_code ec;
  if (fs::exists(run.tokenizer_vocab_file(), ec)) return read_file(run.tokenizer_vocab_file(), "tokenizer vocabulary");
  if (fs::exists(run.tokenizer_file(), ec)) return read_file(run.tokenizer_file(), "tokenizer model");
  return {};
}

}  // namespace

EnsembleResult make_ensemble(const EnsembleOptions& options) {
  if (options.members.size() < 2) {
    throw ConfigError("", "members", 0, "an ensemble needs at least two run directories, got " +
                                            std::to_string(options.members.size()));
  }
  if (options.out_dir.empty()) throw ConfigError("", "--out", 0, "a new run directory is required");
  const RunDirectory out(detail::normalised(options.out_dir));
  std::vector<RunDirectory> runs;
  for (const auto& m : options.members) {
    RunDirectory run(detail::normalised(m));
    run.require_finished();
    // A member may lie inside the ensemble's directory (`train` with ensemble.members puts them
    // in members/), not the other way round.
    if (detail::is_within(out.path(), run.path())) {
      throw ConfigError("", "--out", 0, "'" + out.str() + "' must be a new directory outside the member '" + run.str() + "'");
    }
    for (const auto& seen : runs) {
      if (seen.path() == run.path()) throw ConfigError("", "members", 0, "'" + m + "' is listed twice");
    }
    runs.push_back(std::move(run));
  }

  // Everything read and checked before anything is written.
  Config c = runs.front().load_config(options.overrides);
  c.output.dir = out.str();
  const auto first_labels = runs.front().load_labels().names();
  const auto first_inputs = input_keys(runs.front().load_config());
  const auto first_tokenizer = tokenizer_identity(runs.front());
  if (const auto d = first_difference(first_inputs, input_keys(c)); !d.empty()) {
    throw ConfigError("", "overrides", 0, "the overrides change what the members read: " + d);
  }
  if (c.calibration.method == "split") {
    throw ConfigError(c.source, "calibration.method", 0,
                      "split calibration is for a single model; an ensemble averages temperature-scaled members "
                      "(give calibration.method=temperature)");
  }
  EnsembleManifest manifest;
  for (const auto& run : runs) {
    const Config mc = run.load_config();
    if (run.load_labels().names() != first_labels) {
      throw CheckpointError("'" + run.str() + "' predicts other intents (labels.json) than '" + runs.front().str() +
                            "': an ensemble averages the same classes in the same order");
    }
    if (const auto d = first_difference(first_inputs, input_keys(mc)); !d.empty()) {
      throw CheckpointError("'" + run.str() + "' reads its inputs otherwise than '" + runs.front().str() + "': " + d);
    }
    if (mc.model.uses("text") && tokenizer_identity(run) != first_tokenizer) {
      throw CheckpointError("'" + run.str() + "' has another tokenizer than '" + runs.front().str() +
                            "' (tokenizer.vocab differs): an ensemble's members must read the same token ids; "
                            "train them on the same training texts with the same data.text settings, or give "
                            "them one data.text.tokenizer");
    }
    const auto calibration = load_calibration(run);
    if (calibration.method == "split") {
      throw CheckpointError("'" + run.str() + "' is calibrated by split (" + run.calibration_file().string() +
                            "): an ensemble averages temperature-scaled members; calibrate it with "
                            "calibration.method: temperature");
    }
    const auto relative = fs::relative(run.path(), out.path());
    manifest.members.push_back({run.str(), relative.string(), run.weights_digest(), calibration.temperature});
  }

  detail::check_out_dir(out.path(), options.overwrite);
  out.remove_served_weights();
  for (const auto& stale : {out.calibration_file(), out.oos_file(), out.decision_file(), out.report_file()}) {
    std::error_code ec;
    fs::remove(stale, ec);
  }
  out.save_config(c);
  out.save_labels(runs.front().load_labels());
  if (c.model.uses("text")) out.save_tokenizer(runs.front().tokenizer_file());
  out.save_ensemble_manifest(manifest);
  log::info("ensemble", std::to_string(runs.size()) + " members averaged in " + out.str());

  EnsembleResult result;
  result.run_dir = out.str();
  try {
    configure_runtime(c);
    const c10::Device device = resolve_device(c.runtime.device);
    RunData data = load_run_data(out, c);
    auto model = load_run_model(out, c, data, device);
    OosSetup oos = oos_setup(c, data.labels);
    // What it serves, fitted on val as a trained run's is: calibration on top of the mean
    // (members already calibrated: T near 1), then the out-of-scope and decision thresholds.
    if (!c.data.val.empty()) data.val = detail::read_split(c, data, c.data.val);
    std::shared_ptr<const MultimodalDataset> train;
    if (oos.enabled && !c.data.train.empty()) train = detail::read_split(c, data, c.data.train, oos.label);
    const bool calibrate = detail::calibrates(c);
    const auto fitted = detail::fit_run_serving(model, c, out, train, data.val, device, "val", calibrate, oos);
    const ServingSetup& serving = fitted.serving;
    const auto& features = fitted.features;
    const auto members = detail::member_setups(out, data);
    for (const auto& split : c.eval.splits) {
      const auto& path = split == "val" ? c.data.val : c.data.test;
      if (path.empty()) continue;
      const auto d = split == "val" && data.val ? data.val : detail::read_split(c, data, path);
      result.metrics[split] = detail::evaluate_split(model, c, data, d, split, out, device, options.print_tables, oos,
                                                     serving, features);
      detail::evaluate_members(model, c, d, split, out, device, options.print_tables, members);
    }
    detail::write_html_report(out);
  } catch (...) {
    std::error_code ec;
    fs::remove(out.ensemble_manifest(), ec);  // not a finished run
    throw;
  }
  return result;
}

namespace detail {

TrainRunResult train_ensemble(const Config& c, const TrainRunOptions& options) {
  const int64_t k = c.ensemble.members;
  if (options.communicator && options.communicator->world_size() > 1) {
    throw ConfigError(c.source, "ensemble.members", 0,
                      "an ensemble trains its members one after another in one process; with several processes "
                      "train each member as its own run and combine them with 'mmintent ensemble'");
  }
  if (c.output.numbered) {
    throw ConfigError(c.source, "output.numbered", 0,
                      "is not supported with ensemble.members (a resumed ensemble must find its members); set "
                      "output.dir to a new directory");
  }
  const fs::path dir = normalised(c.output.dir);
  const bool resuming = !options.resume.empty();
  std::error_code ec;
  if (!resuming && !c.output.overwrite && fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    throw ConfigError(c.source, "output.dir", 0,
                      "run directory '" + dir.string() + "' is not empty; choose another output.dir, set "
                      "output.overwrite=true, or resume with --resume auto");
  }
  if (resuming && options.resume != "auto") {
    throw ConfigError("", "--resume", 0, "an ensemble resumes with --resume auto (each member from its own last.pt)");
  }

  // Every member's config, built and checked before any training: the config with the
  // member's seed, overrides and directory.
  const auto yaml = to_yaml(c);
  std::vector<Config> members;
  for (int64_t i = 0; i < k; ++i) {
    std::vector<std::string> overrides;
    if (!c.ensemble.overrides.empty()) {
      std::istringstream words(c.ensemble.overrides[static_cast<size_t>(i)]);
      for (std::string w; words >> w;) overrides.push_back(w);
    }
    const int64_t seed = c.ensemble.seeds.empty() ? c.runtime.seed + i : c.ensemble.seeds[static_cast<size_t>(i)];
    overrides.insert(overrides.end(),
                     {"runtime.seed=" + std::to_string(seed), "ensemble.members=1", "ensemble.seeds=[]",
                      "ensemble.overrides=[]", "output.dir=" + (dir / "members" / std::to_string(i)).string()});
    Config mc;
    try {
      mc = parse_config(yaml, c.source, overrides);
    } catch (const ConfigError& e) {
      throw ConfigError(c.source, "ensemble.overrides", 0, "member " + std::to_string(i) + ": " + e.what());
    }
    if (!members.empty()) {
      if (const auto d = first_difference(input_keys(members.front()), input_keys(mc)); !d.empty()) {
        throw ConfigError(c.source, "ensemble.overrides", 0,
                          "member " + std::to_string(i) + " would read its inputs otherwise than member 0: " + d);
      }
    }
    members.push_back(std::move(mc));
  }

  std::vector<std::string> dirs;
  for (int64_t i = 0; i < k; ++i) {
    const auto& mc = members[static_cast<size_t>(i)];
    const RunDirectory member(mc.output.dir);
    dirs.push_back(member.str());
    TrainRunOptions mo = options;
    mo.print_tables = false;  // the ensemble's report holds each member's figures
    mo.resume.clear();
    if (resuming) {
      bool finished = true;
      try {
        member.require_finished();
      } catch (const Error&) {
        finished = false;
      }
      if (finished && fs::exists(member.report_file(), ec)) {
        log::info("ensemble", "member " + std::to_string(i) + " of " + std::to_string(k) + " is finished: " + member.str());
        continue;
      }
      if (fs::exists(member.last_checkpoint(), ec)) mo.resume = "auto";
    }
    log::info("ensemble", "training member " + std::to_string(i) + " of " + std::to_string(k) + " (runtime.seed " +
                              std::to_string(mc.runtime.seed) + ") into " + member.str());
    train_from_config(mc, mo);
  }

  fs::create_directories(dir, ec);
  setup_logging("", RunDirectory(dir).log_file().string());  // the members logged into their own
  EnsembleOptions eo;
  eo.members = dirs;
  eo.out_dir = dir.string();
  eo.overwrite = true;  // the members are inside it
  eo.print_tables = options.print_tables;
  // The ensemble's config: the first member's, with the ensemble's own seed and ensemble keys
  // (so `train` of its config.yaml trains the same ensemble again).
  std::ostringstream seeds, list;
  for (size_t i = 0; i < c.ensemble.seeds.size(); ++i) seeds << (i ? ", " : "") << c.ensemble.seeds[i];
  for (size_t i = 0; i < c.ensemble.overrides.size(); ++i) {
    list << (i ? ", " : "") << nlohmann::json(c.ensemble.overrides[i]).dump();
  }
  eo.overrides = {"runtime.seed=" + std::to_string(c.runtime.seed), "ensemble.members=" + std::to_string(k),
                  "ensemble.seeds=[" + seeds.str() + "]", "ensemble.overrides=[" + list.str() + "]"};
  const auto made = make_ensemble(eo);
  TrainRunResult result;
  result.run_dir = made.run_dir;
  result.metrics = made.metrics;
  return result;
}

}  // namespace detail
}  // namespace mmintent
