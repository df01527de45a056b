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

namespace {

/// A run's JSON manifest (adapter.json, ensemble.json): CheckpointError naming the file when it
/// cannot be read or is not JSON.
nlohmann::json read_manifest(const fs::path& file, const std::string& what) {
  try {
    return nlohmann::json::parse(read_file(file, what));
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(file.string() + ": not valid JSON: " + e.what());
  } catch (const Error& e) {
    throw CheckpointError(e.what());
  }
}

/// `out` = object `j`'s `key`; CheckpointError "WHERE: 'KEY' is missing" or "... has the wrong type".
template <class T>
void need(const nlohmann::json& j, const std::string& where, const char* key, T& out) {
  if (!j.is_object() || !j.contains(key)) throw CheckpointError(where + ": '" + key + "' is missing");
  try {
    j.at(key).get_to(out);
  } catch (const nlohmann::json::exception&) {
    throw CheckpointError(where + ": '" + key + "' has the wrong type");
  }
}

}  // namespace

AdapterManifest RunDirectory::load_adapter_manifest() const {
  const auto file = adapter_manifest().string();
  const auto j = read_manifest(adapter_manifest(), "adapter manifest");
  AdapterManifest m;
  need(j, file, "base_run", m.base_run);
  need(j, file, "base_run_relative", m.base_run_relative);
  need(j, file, "base_weights_sha256", m.base_weights_sha256);
  int64_t rank = 0;
  double alpha = 0;
  std::vector<std::string> kinds;
  need(j, file, "rank", rank);
  need(j, file, "alpha", alpha);
  need(j, file, "target_kinds", kinds);
  need(j, file, "targets", m.targets);
  need(j, file, "parameters", m.parameters);
  if (rank < 1 || !(alpha > 0)) throw CheckpointError(file + ": 'rank' must be >= 1 and 'alpha' > 0");
  m.options.rank(rank).alpha(alpha).targets(kinds);
  return m;
}

EnsembleManifest RunDirectory::load_ensemble_manifest() const {
  const auto file = ensemble_manifest().string();
  const auto j = read_manifest(ensemble_manifest(), "ensemble manifest");
  if (!j.is_object() || !j.contains("members") || !j["members"].is_array() || j["members"].empty()) {
    throw CheckpointError(file + ": 'members' must be a non-empty array");
  }
  EnsembleManifest m;
  for (size_t i = 0; i < j["members"].size(); ++i) {
    const auto& e = j["members"][i];
    const std::string where = file + ": members[" + std::to_string(i) + "]";
    EnsembleMember member;
    need(e, where, "run", member.run);
    need(e, where, "run_relative", member.run_relative);
    need(e, where, "weights_sha256", member.weights_sha256);
    need(e, where, "temperature", member.temperature);
    if (!(member.temperature > 0)) throw CheckpointError(where + ": 'temperature' must be > 0");
    m.members.push_back(std::move(member));
  }
  return m;
}

void RunDirectory::save_ensemble_manifest(const EnsembleManifest& manifest) const {
  nlohmann::json members = nlohmann::json::array();
  for (const auto& m : manifest.members) {
    members.push_back({{"run", m.run},
                       {"run_relative", m.run_relative},
                       {"weights_sha256", m.weights_sha256},
                       {"temperature", m.temperature}});
  }
  const nlohmann::json j{{"format", "mmintent ensemble: the mean of the members' calibrated probabilities"},
                         {"members", members}};
  write_atomically(ensemble_manifest(), j.dump(2) + "\n");
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
