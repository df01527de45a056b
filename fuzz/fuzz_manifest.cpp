// libFuzzer target: the manifest reader (read_manifest) for JSONL (FUZZ_MANIFEST_JSONL) or
// CSV/TSV (FUZZ_MANIFEST_DELIMITED), with its UTF-8 checks and skip mode.
//
// Input: one option byte, then the manifest's bytes. Option bits: 0 allow_missing_text,
// 1 allow_missing_image, 2 require_label, 3 on_bad_record=skip, 4 no image field, 5 no text
// field, 6 (JSONL) explicit format instead of the extension / (CSV) TSV instead of CSV.
// Properties checked on success: record lines increase; text, image and label are valid UTF-8;
// required values are present; nothing is skipped in "error" mode.

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "mmintent/data/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t bits = data[0];
  mmintent::ManifestReadOptions options;
  options.allow_missing_text = bits & 1;
  options.allow_missing_image = bits & 2;
  options.require_label = bits & 4;
  options.on_bad_record = (bits & 8) ? "skip" : "error";
  if (bits & 16) options.fields.image.clear();
  if (bits & 32) options.fields.text.clear();
#if defined(FUZZ_MANIFEST_JSONL)
  const std::string name = "manifest.jsonl";
  options.format = (bits & 64) ? mmintent::ManifestFormat::jsonl : mmintent::ManifestFormat::automatic;
#elif defined(FUZZ_MANIFEST_DELIMITED)
  const std::string name = (bits & 64) ? "manifest.tsv" : "manifest.csv";
  options.format = mmintent::ManifestFormat::automatic;
#else
#error "define FUZZ_MANIFEST_JSONL or FUZZ_MANIFEST_DELIMITED"
#endif
  const std::string path = mmintent::fuzz::write_scratch(name, data + 1, size - 1);

  mmintent::fuzz::run_guarded([&] {
    const mmintent::Manifest m = mmintent::read_manifest(path, options);
    using mmintent::fuzz::fail;
    if (options.on_bad_record == "error" && !m.skipped.empty()) fail("skipped records in error mode");
    long last = 0;
    for (const auto& r : m.records) {
      const std::string at = "record at line " + std::to_string(r.line);
      if (r.line <= last) fail(at + ": lines do not increase");
      last = r.line;
      if (mmintent::find_invalid_utf8(r.text) != std::string::npos) fail(at + ": text not UTF-8");
      if (mmintent::find_invalid_utf8(r.image) != std::string::npos) fail(at + ": image not UTF-8");
      if (mmintent::find_invalid_utf8(r.label) != std::string::npos) fail(at + ": label not UTF-8");
      if (!options.fields.text.empty() && !options.allow_missing_text && r.text.empty())
        fail(at + ": required text is empty");
      if (!options.fields.image.empty() && !options.allow_missing_image && r.image.empty())
        fail(at + ": required image is empty");
      if (options.fields.text.empty() && !r.text.empty()) fail(at + ": unread text is set");
      if (options.fields.image.empty() && !r.image.empty()) fail(at + ": unread image is set");
      if (options.require_label && r.label.empty()) fail(at + ": required label is empty");
    }
  });
  return 0;
}
