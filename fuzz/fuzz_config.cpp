// libFuzzer target: the YAML config loader (parse_config: YAML parsing, overrides, the schema
// and cross-field checks) and the effective-config writer (to_yaml).
//
// Input: YAML text, optionally followed by NUL-separated command-line overrides
// ("<yaml>\0train.epochs=3\0model.modalities=[text]"). The config's folder holds train.jsonl,
// val.jsonl, test.jsonl, labels.txt and tok.model (so path checks can pass) and a folder `dir`.
// Property checked on success: the written effective config loads again and writes back to the
// same text (a run's saved config.yaml must reload).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "mmintent/config/loader.h"

namespace {

const std::string& origin() {
  static const std::string path = [] {
    namespace fs = std::filesystem;
    const fs::path& dir = mmintent::fuzz::scratch_dir();
    for (const char* name : {"train.jsonl", "val.jsonl", "test.jsonl", "labels.txt", "tok.model"}) {
      mmintent::fuzz::write_scratch(name, reinterpret_cast<const uint8_t*>("\n"), 1);
    }
    fs::create_directories(dir / "dir");
    return (dir / "config.yaml").string();
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string yaml = input.substr(0, nul);
  std::vector<std::string> overrides;
  if (nul != std::string::npos) {
    std::size_t pos = nul + 1;
    while (overrides.size() < 8) {
      const std::size_t end = input.find('\0', pos);
      overrides.push_back(input.substr(pos, end == std::string::npos ? end : end - pos));
      if (end == std::string::npos) break;
      pos = end + 1;
    }
  }
  mmintent::fuzz::run_guarded([&] {
    const mmintent::Config config = mmintent::parse_config(yaml, origin(), overrides);
    const std::string written = mmintent::to_yaml(config);
    mmintent::Config again;
    try {
      again = mmintent::parse_config(written, origin());
    } catch (const mmintent::Error& e) {
      mmintent::fuzz::fail("the effective config does not load again: " + std::string(e.what()) +
                           "\n--- written:\n" + written);
    }
    const std::string rewritten = mmintent::to_yaml(again);
    if (rewritten != written) {
      mmintent::fuzz::fail("the effective config changes when reloaded\n--- first:\n" + written +
                           "\n--- second:\n" + rewritten);
    }
  });
  return 0;
}
