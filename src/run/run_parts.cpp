// RunDirectory's parts that need the data layer (config, labels, tokenizer): in the full
// library (run_directory.cpp has the layout).
#include "mmintent/config/loader.h"
#include "mmintent/data/label_map.h"
#include "mmintent/data/tokenizer.h"
#include "mmintent/run/run_directory.h"

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

}  // namespace mmintent
