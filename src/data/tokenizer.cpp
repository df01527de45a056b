#include "mmintent/data/tokenizer.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "mmintent/error.h"

namespace mmintent {
namespace {

// The C ABI of libmmintent_spm.so (src/spm_shim/spm_shim.cpp documents it).
constexpr int kShimAbiVersion = 1;
constexpr int kShimOk = 0;
constexpr int kShimTooSmall = 2;
constexpr size_t kErrCap = 2048;
constexpr const char* kShimFileName = "libmmintent_spm.so";

using AbiVersionFn = int (*)();
using TrainFn = int (*)(const char*, const char*, int64_t, const char*, double, char*, size_t);
using LoadFn = int (*)(const char*, void**, char*, size_t);
using FreeFn = void (*)(void*);
using PieceSizeFn = int (*)(const void*, int64_t*, char*, size_t);
using EncodeFn = int (*)(const void*, const char*, size_t, int32_t*, size_t, size_t*, char*,
                         size_t);
using DecodeFn = int (*)(const void*, const int32_t*, size_t, char*, size_t, size_t*, char*,
                         size_t);

/// The shim's entry points, resolved once per process.
struct ShimApi {
  std::string path;
  TrainFn train = nullptr;
  LoadFn load = nullptr;
  FreeFn free = nullptr;
  PieceSizeFn piece_size = nullptr;
  EncodeFn encode = nullptr;
  DecodeFn decode = nullptr;
};

std::vector<std::string> shim_candidates() {
  std::vector<std::string> paths;
  auto add = [&paths](const std::string& p) {
    if (p.empty()) return;
    for (const auto& q : paths) {
      if (q == p) return;
    }
    paths.push_back(p);
  };
  if (const char* env = std::getenv("MMINTENT_SPM_SHIM"); env != nullptr) add(env);
  // The shared object (or program) that holds this code: libmmintent.so in the real build.
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&shim_candidates), &info) != 0 && info.dli_fname != nullptr &&
      *info.dli_fname != '\0') {
    std::error_code ec;
    auto own = std::filesystem::weakly_canonical(info.dli_fname, ec);
    if (ec) own = info.dli_fname;
    add((own.parent_path() / kShimFileName).string());
  }
#ifdef MMINTENT_SPM_BUILD_DIR
  add(std::string(MMINTENT_SPM_BUILD_DIR) + "/" + kShimFileName);
#endif
#ifdef MMINTENT_SPM_INSTALL_DIR
  add(std::string(MMINTENT_SPM_INSTALL_DIR) + "/" + kShimFileName);
#endif
  return paths;
}

template <typename Fn>
bool resolve(void* handle, const char* name, Fn* out, std::string* problem) {
  ::dlerror();
  void* sym = ::dlsym(handle, name);
  if (sym == nullptr) {
    const char* e = ::dlerror();
    *problem = std::string("missing symbol ") + name + (e != nullptr ? std::string(": ") + e : "");
    return false;
  }
  *out = reinterpret_cast<Fn>(sym);
  return true;
}

/// Opens `path` in a new link-map namespace and resolves the ABI; on failure returns false,
/// explains why in `problem` and leaves nothing loaded.
bool open_shim(const std::string& path, ShimApi* api, std::string* problem) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    *problem = "no such file";
    return false;
  }
  ::dlerror();
  void* handle = ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* e = ::dlerror();
    *problem = std::string("dlmopen failed: ") + (e != nullptr ? e : "unknown error");
    return false;
  }
  AbiVersionFn version = nullptr;
  bool ok = resolve(handle, "mmintent_spm_abi_version", &version, problem);
  if (ok && version() != kShimAbiVersion) {
    *problem = "ABI version " + std::to_string(version()) + ", expected " +
               std::to_string(kShimAbiVersion);
    ok = false;
  }
  ok = ok && resolve(handle, "mmintent_spm_train", &api->train, problem) &&
       resolve(handle, "mmintent_spm_load", &api->load, problem) &&
       resolve(handle, "mmintent_spm_free", &api->free, problem) &&
       resolve(handle, "mmintent_spm_piece_size", &api->piece_size, problem) &&
       resolve(handle, "mmintent_spm_encode", &api->encode, problem) &&
       resolve(handle, "mmintent_spm_decode", &api->decode, problem);
  if (!ok) {
    ::dlclose(handle);
    return false;
  }
  api->path = path;  // The handle stays open for the life of the process.
  return true;
}

/// The loaded shim; throws mmintent::Error listing every path tried when none works.
const ShimApi& shim() {
  static std::once_flag once;
  static ShimApi api;
  static std::string failure;
  std::call_once(once, [] {
    std::string tried;
    for (const auto& path : shim_candidates()) {
      std::string problem;
      if (open_shim(path, &api, &problem)) return;
      api = ShimApi{};
      tried += "\n  " + path + ": " + problem;
    }
    failure = std::string("cannot load the sentencepiece shim ") + kShimFileName +
              " (set MMINTENT_SPM_SHIM to its full path); tried:" +
              (tried.empty() ? std::string("\n  (no candidate paths)") : tried);
  });
  if (!failure.empty()) throw Error(failure);
  return api;
}

std::string shim_message(const char* err) {
  return err[0] != '\0' ? std::string(err) : std::string("unknown sentencepiece error");
}

}  // namespace

/// Owns one shim model handle.
struct Tokenizer::Model {
  Model(const ShimApi* api, void* handle, std::string path, int64_t piece_size)
      : api(api), handle(handle), path(std::move(path)), piece_size(piece_size) {}
  ~Model() { api->free(handle); }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ShimApi* api;
  void* handle;
  std::string path;
  int64_t piece_size;
};

Tokenizer::Tokenizer(std::shared_ptr<const Model> model) : model_(std::move(model)) {}

Tokenizer Tokenizer::load(const std::string& model_path) {
  std::error_code ec;
  if (!std::filesystem::exists(model_path, ec)) {
    throw DataError(model_path, 0, "sentencepiece model file not found");
  }
  if (!std::filesystem::is_regular_file(model_path, ec)) {
    throw DataError(model_path, 0, "sentencepiece model path is not a regular file");
  }
  const ShimApi& api = shim();
  char err[kErrCap] = {0};
  void* handle = nullptr;
  if (api.load(model_path.c_str(), &handle, err, sizeof err) != kShimOk || handle == nullptr) {
    throw DataError(model_path, 0,
                    "not a valid sentencepiece model (expected a serialized ModelProto): " +
                        shim_message(err));
  }
  int64_t pieces = 0;
  if (api.piece_size(handle, &pieces, err, sizeof err) != kShimOk) {
    api.free(handle);
    throw DataError(model_path, 0, "cannot read the vocabulary size: " + shim_message(err));
  }
  return Tokenizer(std::make_shared<const Model>(&api, handle, model_path, pieces));
}

Tokenizer Tokenizer::train(const std::vector<std::string>& texts, const std::string& model_prefix,
                           const TokenizerTrainOptions& options) {
  if (options.vocab_size <= 0 || options.vocab_size > INT32_MAX) {
    throw std::invalid_argument("TokenizerTrainOptions.vocab_size must be in [1, 2^31), got " +
                                std::to_string(options.vocab_size));
  }
  const auto& type = options.model_type;
  if (type != "unigram" && type != "bpe" && type != "word" && type != "char") {
    throw std::invalid_argument(
        "TokenizerTrainOptions.model_type must be one of unigram|bpe|word|char, got '" + type +
        "'");
  }
  if (!(options.character_coverage > 0.0 && options.character_coverage <= 1.0)) {
    throw std::invalid_argument("TokenizerTrainOptions.character_coverage must be in (0, 1], got " +
                                std::to_string(options.character_coverage));
  }
  if (model_prefix.empty()) throw std::invalid_argument("Tokenizer::train: empty model_prefix");
  const ShimApi& api = shim();

  const std::filesystem::path prefix(model_prefix);
  std::error_code ec;
  if (prefix.has_parent_path()) std::filesystem::create_directories(prefix.parent_path(), ec);
  const std::string corpus = model_prefix + ".corpus.txt";
  size_t lines = 0;
  {
    std::ofstream out(corpus, std::ios::binary | std::ios::trunc);
    if (!out) throw DataError(corpus, 0, "cannot write the tokenizer training corpus");
    for (const auto& text : texts) {
      if (text.find_first_not_of(" \t\r\n\f\v") == std::string::npos) continue;
      std::string line = text;
      for (char& c : line) {
        if (c == '\n' || c == '\r' || c == '\0') c = ' ';
      }
      out << line << '\n';
      ++lines;
    }
    out.flush();
    if (!out) throw DataError(corpus, 0, "cannot write the tokenizer training corpus");
  }
  if (lines == 0) {
    std::filesystem::remove(corpus, ec);
    throw Error("Tokenizer::train: no non-empty text to train on (model prefix " + model_prefix +
                ")");
  }
  char err[kErrCap] = {0};
  const int rc = api.train(corpus.c_str(), model_prefix.c_str(), options.vocab_size, type.c_str(),
                           options.character_coverage, err, sizeof err);
  std::filesystem::remove(corpus, ec);
  if (rc != kShimOk) {
    throw Error("Tokenizer::train: sentencepiece training for " + model_prefix + " (" +
                std::to_string(lines) + " sentences, " + type + ", vocab_size " +
                std::to_string(options.vocab_size) + ") failed: " + shim_message(err));
  }
  return load(model_prefix + ".model");
}

std::vector<int64_t> Tokenizer::encode(const std::string& text) const {
  if (text.empty()) return {};
  const ShimApi& api = *model_->api;
  std::vector<int32_t> raw(text.size() + 8);
  char err[kErrCap] = {0};
  size_t needed = 0;
  int rc = api.encode(model_->handle, text.data(), text.size(), raw.data(), raw.size(), &needed,
                      err, sizeof err);
  if (rc == kShimTooSmall) {
    raw.resize(needed);
    rc = api.encode(model_->handle, text.data(), text.size(), raw.data(), raw.size(), &needed, err,
                    sizeof err);
  }
  if (rc != kShimOk) {
    throw Error("Tokenizer::encode (" + model_->path + "): " + shim_message(err));
  }
  std::vector<int64_t> ids(needed);
  for (size_t i = 0; i < needed; ++i) ids[i] = static_cast<int64_t>(raw[i]) + 1;
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int32_t> raw;
  raw.reserve(ids.size());
  for (const int64_t id : ids) {
    if (id <= 0) continue;
    if (id > model_->piece_size) {
      throw std::invalid_argument("Tokenizer::decode (" + model_->path + "): id " +
                                  std::to_string(id) + " is outside [0, " +
                                  std::to_string(model_->piece_size + 1) + ")");
    }
    raw.push_back(static_cast<int32_t>(id - 1));
  }
  if (raw.empty()) return {};
  const ShimApi& api = *model_->api;
  std::string text(raw.size() * 8 + 16, '\0');
  char err[kErrCap] = {0};
  size_t needed = 0;
  int rc = api.decode(model_->handle, raw.data(), raw.size(), text.data(), text.size(), &needed,
                      err, sizeof err);
  if (rc == kShimTooSmall) {
    text.resize(needed);
    rc = api.decode(model_->handle, raw.data(), raw.size(), text.data(), text.size(), &needed, err,
                    sizeof err);
  }
  if (rc != kShimOk) {
    throw Error("Tokenizer::decode (" + model_->path + "): " + shim_message(err));
  }
  text.resize(needed);
  return text;
}

int64_t Tokenizer::vocab_size() const { return model_->piece_size + 1; }

const std::string& Tokenizer::model_path() const { return model_->path; }

}  // namespace mmintent
