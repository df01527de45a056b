/// libmmintent_spm: sentencepiece behind a plain C ABI.
///
/// Why this exists: Debian's libsentencepiece.so exports the protobuf 3.14 it bundles, while
/// libtorch_cpu loads the system libprotobuf 3.21. A program that links both dies before main
/// (protobuf static initialisation) or aborts on a protobuf version check. So libmmintent.so
/// never links sentencepiece: it loads this module with
/// dlmopen(LM_ID_NEWLM, path, RTLD_NOW | RTLD_LOCAL), which gives sentencepiece and its protobuf a
/// link-map namespace of their own (see src/data/tokenizer.cpp).
///
/// ABI rules (version kAbiVersion, checked by the loader):
/// - Only C types cross: opaque handles, pointers to caller-owned buffers, fixed-width integers.
/// - Every function catches everything and returns a status: MMINTENT_SPM_OK (0),
///   MMINTENT_SPM_ERROR (1, a message is written to `err`), or MMINTENT_SPM_TOO_SMALL (2, the
///   output buffer was too small and `*needed` holds the size required; nothing else changed).
/// - `err` / `err_cap`: a caller buffer that receives a NUL-terminated message, truncated to
///   fit; either may be null/0.
///
/// Functions:
///   int  mmintent_spm_abi_version(void);
///   int  mmintent_spm_train(const char* input_path, const char* model_prefix,
///                           int64_t vocab_size, const char* model_type,
///                           double character_coverage, char* err, size_t err_cap);
///        Trains on `input_path` (one sentence a line); writes <model_prefix>.model and .vocab.
///        Deterministic: one trainer thread and a fixed random seed; hard_vocab_limit=false so
///        tiny corpora train; sentencepiece's log limited to errors.
///   int  mmintent_spm_load(const char* model_path, void** handle, char* err, size_t err_cap);
///   void mmintent_spm_free(void* handle);                       (null is a no-op)
///   int  mmintent_spm_piece_size(const void* handle, int64_t* size, char* err, size_t err_cap);
///   int  mmintent_spm_encode(const void* handle, const char* text, size_t text_len,
///                            int32_t* ids, size_t ids_cap, size_t* needed,
///                            char* err, size_t err_cap);
///        Raw sentencepiece ids (0 .. piece_size-1). On OK `*needed` is the number written.
///   int  mmintent_spm_decode(const void* handle, const int32_t* ids, size_t n_ids,
///                            char* out, size_t out_cap, size_t* needed,
///                            char* err, size_t err_cap);
///        UTF-8 bytes, not NUL-terminated. On OK `*needed` is the number of bytes written.
///        Ids outside [0, piece_size) are an error.
/// encode/decode may be called concurrently on one handle; train is serialised internally.

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

// Exported by libsentencepiece (0.1.97) but not declared in its public headers.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}  // namespace sentencepiece::logging

#define MMINTENT_SPM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr int kAbiVersion = 1;
constexpr int kOk = 0;
constexpr int kError = 1;
constexpr int kTooSmall = 2;
/// sentencepiece log levels: 0 info, 1 warning, 2 error, 3 fatal.
constexpr int kQuietLogLevel = 2;
constexpr unsigned int kTrainSeed = 20240101u;

struct Model {
  sentencepiece::SentencePieceProcessor processor;
  int piece_size = 0;
};

void write_error(char* err, size_t err_cap, const std::string& message) {
  if (err == nullptr || err_cap == 0) return;
  const size_t n = message.size() < err_cap - 1 ? message.size() : err_cap - 1;
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

void clear_error(char* err, size_t err_cap) {
  if (err != nullptr && err_cap > 0) err[0] = '\0';
}

/// Runs `body` and turns any exception into kError with its text in `err`.
template <typename Body>
int guarded(const char* function, char* err, size_t err_cap, Body&& body) noexcept {
  try {
    clear_error(err, err_cap);
    return body();
  } catch (const std::exception& e) {
    try {
      write_error(err, err_cap, std::string(function) + ": " + e.what());
    } catch (...) {
      write_error(err, err_cap, "out of memory while reporting an error");
    }
  } catch (...) {
    write_error(err, err_cap, std::string(function) + ": unknown exception");
  }
  return kError;
}

int fail(char* err, size_t err_cap, const std::string& message) {
  write_error(err, err_cap, message);
  return kError;
}

std::string to_text(double value) {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  os.precision(17);
  os << value;
  return os.str();
}

std::mutex& train_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

MMINTENT_SPM_EXPORT int mmintent_spm_abi_version(void) { return kAbiVersion; }

MMINTENT_SPM_EXPORT int mmintent_spm_train(const char* input_path, const char* model_prefix,
                                           int64_t vocab_size, const char* model_type,
                                           double character_coverage, char* err,
                                           size_t err_cap) {
  return guarded("mmintent_spm_train", err, err_cap, [&]() -> int {
    if (input_path == nullptr || *input_path == '\0') return fail(err, err_cap, "empty input path");
    if (model_prefix == nullptr || *model_prefix == '\0') {
      return fail(err, err_cap, "empty model prefix");
    }
    if (model_type == nullptr) return fail(err, err_cap, "null model type");
    if (vocab_size <= 0 || vocab_size > INT32_MAX) {
      return fail(err, err_cap, "vocab_size must be in [1, 2^31), got " + std::to_string(vocab_size));
    }
    const std::unordered_map<std::string, std::string> args = {
        {"input", input_path},
        {"model_prefix", model_prefix},
        {"vocab_size", std::to_string(vocab_size)},
        {"model_type", model_type},
        {"character_coverage", to_text(character_coverage)},
        {"hard_vocab_limit", "false"},
        {"num_threads", "1"},
        {"minloglevel", std::to_string(kQuietLogLevel)},
    };
    std::lock_guard<std::mutex> lock(train_mutex());
    sentencepiece::logging::SetMinLogLevel(kQuietLogLevel);
    sentencepiece::SetRandomGeneratorSeed(kTrainSeed);
    const auto status = sentencepiece::SentencePieceTrainer::Train(args);
    if (!status.ok()) return fail(err, err_cap, status.ToString());
    return kOk;
  });
}

MMINTENT_SPM_EXPORT int mmintent_spm_load(const char* model_path, void** handle, char* err,
                                          size_t err_cap) {
  return guarded("mmintent_spm_load", err, err_cap, [&]() -> int {
    if (handle == nullptr) return fail(err, err_cap, "null handle pointer");
    *handle = nullptr;
    if (model_path == nullptr) return fail(err, err_cap, "null model path");
    sentencepiece::logging::SetMinLogLevel(kQuietLogLevel);
    auto model = std::make_unique<Model>();
    const auto status = model->processor.Load(model_path);
    if (!status.ok()) return fail(err, err_cap, status.ToString());
    model->piece_size = model->processor.GetPieceSize();
    if (model->piece_size <= 0) return fail(err, err_cap, "model has no pieces");
    *handle = model.release();
    return kOk;
  });
}

MMINTENT_SPM_EXPORT void mmintent_spm_free(void* handle) {
  try {
    delete static_cast<Model*>(handle);
  } catch (...) {
    // A destructor that throws has nowhere to report to; never let it cross the ABI.
  }
}

MMINTENT_SPM_EXPORT int mmintent_spm_piece_size(const void* handle, int64_t* size, char* err,
                                                size_t err_cap) {
  return guarded("mmintent_spm_piece_size", err, err_cap, [&]() -> int {
    if (handle == nullptr || size == nullptr) return fail(err, err_cap, "null argument");
    *size = static_cast<const Model*>(handle)->piece_size;
    return kOk;
  });
}

MMINTENT_SPM_EXPORT int mmintent_spm_encode(const void* handle, const char* text, size_t text_len,
                                            int32_t* ids, size_t ids_cap, size_t* needed,
                                            char* err, size_t err_cap) {
  return guarded("mmintent_spm_encode", err, err_cap, [&]() -> int {
    if (handle == nullptr || needed == nullptr) return fail(err, err_cap, "null argument");
    if (text == nullptr && text_len > 0) return fail(err, err_cap, "null text");
    *needed = 0;
    const auto* model = static_cast<const Model*>(handle);
    std::vector<int> pieces;
    if (text_len > 0) {
      const auto status = model->processor.Encode(std::string_view(text, text_len), &pieces);
      if (!status.ok()) return fail(err, err_cap, status.ToString());
    }
    *needed = pieces.size();
    if (pieces.size() > ids_cap) return kTooSmall;
    if (!pieces.empty() && ids == nullptr) return fail(err, err_cap, "null id buffer");
    for (size_t i = 0; i < pieces.size(); ++i) ids[i] = static_cast<int32_t>(pieces[i]);
    return kOk;
  });
}

MMINTENT_SPM_EXPORT int mmintent_spm_decode(const void* handle, const int32_t* ids, size_t n_ids,
                                            char* out, size_t out_cap, size_t* needed, char* err,
                                            size_t err_cap) {
  return guarded("mmintent_spm_decode", err, err_cap, [&]() -> int {
    if (handle == nullptr || needed == nullptr) return fail(err, err_cap, "null argument");
    if (ids == nullptr && n_ids > 0) return fail(err, err_cap, "null ids");
    *needed = 0;
    const auto* model = static_cast<const Model*>(handle);
    std::vector<int> pieces(n_ids);
    for (size_t i = 0; i < n_ids; ++i) {
      if (ids[i] < 0 || ids[i] >= model->piece_size) {
        return fail(err, err_cap,
                    "id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                        " is outside [0, " + std::to_string(model->piece_size) + ")");
      }
      pieces[i] = ids[i];
    }
    std::string text;
    if (!pieces.empty()) {
      const auto status = model->processor.Decode(pieces, &text);
      if (!status.ok()) return fail(err, err_cap, status.ToString());
    }
    *needed = text.size();
    if (text.size() > out_cap) return kTooSmall;
    if (!text.empty() && out == nullptr) return fail(err, err_cap, "null output buffer");
    if (!text.empty()) std::memcpy(out, text.data(), text.size());
    return kOk;
  });
}
