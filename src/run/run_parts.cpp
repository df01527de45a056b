// RunDirectory's parts that need the data layer (config, labels, tokenizer) or JSON (the
// adapter's manifest): in the full library (run_directory.cpp has the layout).
#include "mmintent/config/loader.h"
#include "mmintent/core/files.h"
#include "mmintent/data/label_map.h"
#include "mmintent/data/tokenizer.h"
#include "mmintent/error.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/training/checkpoint.h"

#include <nlohmann/json.hpp>

#include <c10/core/Device.h>

namespace mmintent {
namespace fs = std::filesystem;

Config RunDirectory::load_config(const std::vector<std::string>& overrides) const {
  return mmintent::load_config(config_file().string(), overrides);
}

LabelMap RunDirectory::load_labels() const { return LabelMap::load(labels_file().string()); }

std::shared_ptr<const Tokenizer> RunDirectory::load_tokenizer(const Config& config) const {
  if (!config.model.uses("text")) return nullptr;
  return std::make_shared<Tokenizer>(Tokenizer::load(tokenizer_file().string()));
}

void RunDirectory::save_config(const Config& config) const {
  mmintent::save_config(config, config_file().string());
}

void RunDirectory::save_labels(const LabelMap& labels) const { labels.save(labels_file().string()); }

void RunDirectory::save_tokenizer(const fs::path& model) const {
  std::error_code ec;
  if (fs::equivalent(model, tokenizer_file(), ec)) return;  // resumed: already in place
  fs::copy_file(model, tokenizer_file(), fs::copy_options::overwrite_existing);
  auto vocab = fs::path(model).replace_extension(".vocab");
  if (fs::exists(vocab)) {
    fs::copy_file(vocab, tokenizer_vocab_file(), fs::copy_options::overwrite_existing);
  }
}

AdapterManifest RunDirectory::load_adapter_manifest() const {
  const auto file = adapter_manifest().string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(adapter_manifest(), "adapter manifest"));
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(file + ": not valid JSON: " + e.what());
  } catch (const Error& e) {
    throw CheckpointError(e.what());
  }
  AdapterManifest m;
  auto need = [&](const char* key, auto& out) {
    if (!j.is_object() || !j.contains(key)) throw CheckpointError(file + ": '" + key + "' is missing");
    try {
      j.at(key).get_to(out);
    } catch (const nlohmann::json::exception&) {
      throw CheckpointError(file + ": '" + key + "' has the wrong type");
    }
  };
  need("base_run", m.base_run);
  need("base_run_relative", m.base_run_relative);
  need("base_weights_sha256", m.base_weights_sha256);
  int64_t rank = 0;
  double alpha = 0;
  std::vector<std::string> kinds;
  need("rank", rank);
  need("alpha", alpha);
  need("target_kinds", kinds);
  need("targets", m.targets);
  need("parameters", m.parameters);
  if (rank < 1 || !(alpha > 0)) throw CheckpointError(file + ": 'rank' must be >= 1 and 'alpha' > 0");
  m.options.rank(rank).alpha(alpha).targets(kinds);
  return m;
}

void RunDirectory::save_adapter(const LowRankAdapterImpl& adapter, const AdapterManifest& manifest) const {
  save_checkpoint(adapter_file().string(), adapter, nullptr, TrainingState{}, nullptr, c10::Device(c10::kCPU));
  const nlohmann::json j{{"format", "mmintent low-rank adapter (models/low_rank.h)"},
                         {"base_run", manifest.base_run},
                         {"base_run_relative", manifest.base_run_relative},
                         {"base_weights_sha256", manifest.base_weights_sha256},
                         {"rank", manifest.options.rank()},
                         {"alpha", manifest.options.alpha()},
                         {"target_kinds", manifest.options.targets()},
                         {"targets", manifest.targets},
                         {"parameters", manifest.parameters}};
  write_atomically(adapter_manifest(), j.dump(2) + "\n");
}

}  // namespace mmintent
