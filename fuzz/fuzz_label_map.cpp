// libFuzzer target: the label-map reader (LabelMap::load) for JSON arrays and one-label-per-line
// text files, plus LabelMap::index's "file:line" parsing and the save/load round trip.
//
// Input: one option byte (bit 0: .json, else .txt; bit 1: upper-case extension), then the
// file's bytes. Properties checked on success: at least one label; labels non-empty, valid
// UTF-8 and distinct; find(name(i)) == i; save() then load() gives the same labels in order.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>

#include "fuzz_support.h"
#include "mmintent/data/label_map.h"
#include "mmintent/data/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t bits = data[0];
  std::string name = (bits & 1) ? "labels.json" : "labels.txt";
  if (bits & 2) name = (bits & 1) ? "labels.JSON" : "labels.TXT";
  const std::string path = mmintent::fuzz::write_scratch(name, data + 1, size - 1);

  mmintent::fuzz::run_guarded([&] {
    using mmintent::fuzz::fail;
    const mmintent::LabelMap map = mmintent::LabelMap::load(path);
    if (map.size() < 1) fail("loaded an empty label map");
    std::unordered_set<std::string> seen;
    for (int64_t i = 0; i < map.size(); ++i) {
      const std::string& label = map.name(i);
      if (label.empty()) fail("empty label #" + std::to_string(i));
      if (mmintent::find_invalid_utf8(label) != std::string::npos) fail("label not UTF-8");
      if (!seen.insert(label).second) fail("duplicate label '" + label + "'");
      if (map.find(label) != i) fail("find(name(i)) != i for '" + label + "'");
    }
    const std::string saved = (mmintent::fuzz::scratch_dir() / "saved.json").string();
    map.save(saved);
    const mmintent::LabelMap again = mmintent::LabelMap::load(saved);
    if (again.names() != map.names()) fail("save/load round trip changed the labels");
    // An unknown label: the error names the "file:line" given (any text must be accepted).
    const std::string unknown = std::string("\x01") + std::to_string(size);
    if (map.find(unknown) < 0) {
      const std::string where(reinterpret_cast<const char*>(data + 1),
                              std::min<std::size_t>(size - 1, 64));
      try {
        map.index(unknown, where);
        fail("index() accepted an unknown label");
      } catch (const mmintent::DataError&) {
      }
    }
  });
  return 0;
}
