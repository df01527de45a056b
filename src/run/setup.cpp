#include "mmintent/run/setup.h"

#include "mmintent/core/digest.h"
#include "mmintent/core/log.h"
#include "mmintent/error.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/device.h"
#include "mmintent/training/quantization.h"

#include <opencv2/core.hpp>

#include <algorithm>
#include <filesystem>
#include <thread>

namespace mmintent {

RunData load_run_data(const RunDirectory& run, const Config& c) {
  RunData data;
  data.labels = run.load_labels();
  data.tokenizer = run.load_tokenizer(c);
  return data;
}

ManifestReadOptions manifest_read_options(const Config& c, bool require_label) {
  ManifestReadOptions o;
  o.format = parse_manifest_format(c.data.format);
  o.fields = c.data.fields;
  if (!c.model.uses("text")) o.fields.text.clear();
  if (!c.model.uses("image")) o.fields.image.clear();
  if (c.model.uses("audio")) {  // read as a plug-in's field, holding file paths
    o.fields.plugins["audio"] = c.data.audio.field;
    o.path_inputs.insert("audio");
    if (c.data.allow_missing_audio) o.allow_missing_plugins.insert("audio");
  }
  for (const auto& name : c.model.modalities) {
    if (is_builtin_modality(name)) continue;
    ModalitySettings settings;
    settings.modality = name;
    if (const auto it = c.model.plugins.find(name); it != c.model.plugins.end()) settings = it->second;
    o.fields.plugins[name] = settings.field();
    if (settings.allow_missing()) o.allow_missing_plugins.insert(name);
  }
  o.require_label = require_label;
  o.allow_missing_text = c.data.allow_missing_text;
  o.allow_missing_image = c.data.allow_missing_image;
  o.on_bad_record = c.data.on_bad_sample;
  return o;
}

DatasetOptions dataset_options(const Config& c) {
  DatasetOptions o;
  o.modalities = c.model.modalities;
  o.plugins = c.model.plugins;
  o.image = c.data.image;
  o.audio = c.data.audio;
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

namespace {

/// The base run of an adapter run, found and checked against the weights the adapter was
/// trained over.
RunDirectory adapter_base(const RunDirectory& run, const AdapterManifest& manifest) {
  // Where it was, else where it is beside the adapter run (both moved together).
  std::vector<RunDirectory> candidates{RunDirectory(manifest.base_run)};
  if (!manifest.base_run_relative.empty()) candidates.emplace_back(run.path() / manifest.base_run_relative);
  std::string found;
  for (const auto& base : candidates) {
    std::error_code ec;
    if (!std::filesystem::exists(base.weights_file(), ec)) continue;
    const auto digest = sha256_file_hex(base.weights_file());
    if (digest == manifest.base_weights_sha256) return base;
    found += (found.empty() ? "" : "; ") + base.weights_file().string() + " has " + digest.substr(0, 12);
  }
  if (found.empty()) {
    throw CheckpointError(run.adapter_manifest().string() + ": the adapter's base run " + manifest.base_run +
                          " has no model.pt (nor has " + (run.path() / manifest.base_run_relative).string() +
                          "): the adapter cannot be loaded without the weights it adapts");
  }
  throw CheckpointError(run.adapter_manifest().string() + ": the adapter was trained over weights " +
                        manifest.base_weights_sha256.substr(0, 12) + " (base run " + manifest.base_run +
                        "), but " + found + ": it adapts other weights; tune the adapter again over this base " +
                        "(tune.method=lora), or bring back the base it was trained over");
}

}  // namespace

std::vector<RunDirectory> ensemble_member_runs(const RunDirectory& run, const EnsembleManifest& manifest) {
  std::vector<RunDirectory> members;
  for (size_t i = 0; i < manifest.members.size(); ++i) {
    const auto& m = manifest.members[i];
    const std::string which = run.ensemble_manifest().string() + ": member " + std::to_string(i) + " (" + m.run + ")";
    // Where it was, else where it is beside the ensemble run (both moved together).
    std::vector<RunDirectory> candidates{RunDirectory(m.run)};
    if (!m.run_relative.empty()) candidates.emplace_back(run.path() / m.run_relative);
    std::string found;
    bool ok = false;
    for (const auto& candidate : candidates) {
      std::error_code ec;
      if (!std::filesystem::exists(candidate.config_file(), ec)) continue;
      candidate.require_finished();
      const auto digest = candidate.weights_digest();
      if (digest == m.weights_sha256) {
        members.push_back(candidate);
        ok = true;
        break;
      }
      found += (found.empty() ? "" : "; ") + candidate.served_weights_file().string() + " has " + digest.substr(0, 12);
    }
    if (ok) continue;
    if (found.empty()) {
      throw CheckpointError(which + " is not there (nor is " + (run.path() / m.run_relative).string() +
                            "): an ensemble needs its members' run directories");
    }
    throw CheckpointError(which + ": its weights were " + m.weights_sha256.substr(0, 12) + " when the ensemble was made, but " +
                          found + ": the member changed since; make the ensemble again (mmintent ensemble)");
  }
  return members;
}

IntentClassifier load_run_model(const RunDirectory& run, const Config& config, const RunData& data,
                                const c10::Device& device) {
  if (run.has_ensemble()) {
    // Each member as its own run loads it (itself an adapter run or an ensemble, maybe), over
    // the ensemble's labels and tokenizer (`mmintent ensemble` checked they are the members').
    const auto manifest = run.load_ensemble_manifest();
    const auto runs = ensemble_member_runs(run, manifest);
    std::vector<std::shared_ptr<IntentClassifierImpl>> members;
    std::vector<double> temperatures;
    for (size_t i = 0; i < runs.size(); ++i) {
      members.push_back(load_run_model(runs[i], runs[i].load_config(), data, device).ptr());
      temperatures.push_back(manifest.members[i].temperature);
    }
    IntentClassifier ensemble(std::make_shared<IntentClassifierImpl>(std::move(members), std::move(temperatures)));
    ensemble->to(device);
    return ensemble;
  }
  auto model = build_model(config, data);
  if (!run.has_adapter() && run.has_int8()) {
    load_int8_weights(run.int8_weights_file().string(), *model, device);  // dequantised: float weights
    model->to(device);
    return model;
  }
  if (!run.has_adapter()) {
    load_checkpoint(run.weights_file().string(), *model, nullptr, device, /*restore_rng=*/false);
    model->to(device);
    return model;
  }
  // An adapter run: the base's weights, the adapter over them, merged (a plain model again).
  const auto manifest = run.load_adapter_manifest();
  const auto base = adapter_base(run, manifest);
  load_checkpoint(base.weights_file().string(), *model, nullptr, device, /*restore_rng=*/false);
  LowRankAdapter adapter{nullptr};
  try {
    adapter = LowRankAdapter(*model, manifest.options);
  } catch (const c10::Error& e) {
    throw CheckpointError(run.adapter_manifest().string() + ": " + e.what_without_backtrace());
  }
  if (adapter->targets() != manifest.targets) {
    throw CheckpointError(run.adapter_manifest().string() + ": its targets are not the weights this model's " +
                          "architecture has for them (the config was changed since the adapter was trained)");
  }
  load_checkpoint(run.adapter_file().string(), *adapter, nullptr, device, /*restore_rng=*/false);
  adapter->merge_into(*model);
  model->to(device);
  return model;
}

}  // namespace mmintent
