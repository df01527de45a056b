#include "mmintent/app/export.h"

#include "mmintent/config/loader.h"
#include "mmintent/core/files.h"
#include "mmintent/error.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/run/setup.h"
#include "mmintent/training/checkpoint.h"

#include <nlohmann/json.hpp>

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace mmintent {
namespace fs = std::filesystem;

namespace {

/// safetensors' name of a tensor's element type.
std::string safetensors_dtype(const at::Tensor& t, const std::string& name) {
  switch (t.scalar_type()) {
    case at::kFloat: return "F32";
    case at::kDouble: return "F64";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default:
      throw CheckpointError("cannot export tensor '" + name + "': safetensors has no type for " +
                            std::string(c10::toString(t.scalar_type())));
  }
}

/// The safetensors file: an 8-byte little-endian header length, the JSON header (padded with
/// spaces to a multiple of 8 bytes, as the reference writer does), then each tensor's bytes.
void write_safetensors(const StateDict& state, const nlohmann::ordered_json& metadata, const fs::path& path) {
  static_assert(sizeof(uint64_t) == 8, "");
  {
    const uint16_t probe = 1;
    unsigned char first = 0;
    std::memcpy(&first, &probe, 1);
    if (first != 1) throw CheckpointError("safetensors export needs a little-endian machine");
  }
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : state) {
    const uint64_t bytes = static_cast<uint64_t>(tensor.numel()) * tensor.element_size();
    header[name] = {{"dtype", safetensors_dtype(tensor, name)},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw CheckpointError("cannot write '" + tmp.string() + "'");
    const uint64_t length = text.size();
    out.write(reinterpret_cast<const char*>(&length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, tensor] : state) {
      const auto t = tensor.contiguous();
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    out.flush();
    if (!out) throw CheckpointError("cannot write '" + tmp.string() + "' (disk full?)");
  }
  fs::rename(tmp, path);
}

/// What tools/export/mmintent_export.py rebuilds the network from: the model's options, the
/// image size its loader gives (for the example input) and the modalities in fusion order.
nlohmann::ordered_json architecture(IntentClassifierImpl& model, const Config& config) {
  const auto& o = model.options;
  nlohmann::ordered_json a;
  a["modalities"] = model.modalities();
  a["num_classes"] = o.num_classes();
  for (const auto& name : model.modalities()) {
    if (name == "text") {
      const auto& t = o.text();
      a["text"] = {{"vocab_size", t.vocab_size()},       {"type", t.type()},
                   {"embedding_dim", t.embedding_dim()}, {"hidden_size", t.hidden_size()},
                   {"num_layers", t.num_layers()},       {"bidirectional", t.bidirectional()},
                   {"pooling", t.pooling()},             {"max_length", config.data.text.max_length}};
    } else if (name == "image") {
      const auto& i = o.image();
      a["image"] = {{"in_channels", i.in_channels()}, {"channels", i.channels()},
                    {"convs_per_block", i.convs_per_block()}, {"kernel_size", i.kernel_size()},
                    {"batch_norm", i.batch_norm()}, {"pool", i.pool()},
                    {"dropout", i.dropout()}, {"out_dim", i.out_dim()},
                    {"height", config.data.image.height}, {"width", config.data.image.width}};
    } else if (name == "audio") {
      const auto& au = o.audio();
      a["audio"] = {{"n_mels", au.n_mels()}, {"channels", au.channels()}, {"type", au.type()},
                    {"hidden_size", au.hidden_size()}, {"num_layers", au.num_layers()},
                    {"bidirectional", au.bidirectional()}, {"pooling", au.pooling()},
                    {"global_norm", au.global_norm()}};
    }
  }
  a["fusion"] = {{"type", o.fusion().type()}, {"dim", o.fusion().dim()}};
  a["head"] = {{"hidden", o.head().hidden()}, {"dropout", o.head().dropout()}};
  return a;
}

std::string python_interpreter(const std::string& chosen) {
  if (!chosen.empty()) return chosen;
  if (const char* env = std::getenv("MMINTENT_PYTHON"); env && *env) return env;
  return fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

/// The exporter script: $MMINTENT_EXPORT_SCRIPT; else the copy installed beside this library
/// (PREFIX/lib/../share/mmintent, wherever the prefix was moved); else, in a build tree, the
/// source tree's; else the configured install location.
std::string export_script() {
  if (const char* env = std::getenv("MMINTENT_EXPORT_SCRIPT"); env && *env) return env;
  std::vector<fs::path> candidates;
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&python_interpreter), &info) != 0 && info.dli_fname != nullptr &&
      *info.dli_fname != '\0') {
    std::error_code ec;
    auto own = fs::weakly_canonical(info.dli_fname, ec);
    if (ec) own = info.dli_fname;
    candidates.push_back(own.parent_path().parent_path() / "share" / "mmintent" / "mmintent_export.py");
  }
  candidates.emplace_back(MMINTENT_EXPORT_SCRIPT_SOURCE);
  candidates.emplace_back(MMINTENT_EXPORT_SCRIPT_INSTALLED);
  std::string looked;
  for (const auto& path : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(path, ec)) return path.string();
    looked += (looked.empty() ? "" : ", ") + path.string();
  }
  throw Error("cannot find mmintent_export.py (looked at " + looked + "); set MMINTENT_EXPORT_SCRIPT to its path");
}

/// Runs `argv` (no shell) with its stdout and stderr in `log`; returns its exit status, or
/// -1 when it could not start or was killed.
int run_process(const std::vector<std::string>& argv, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int started = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (started != 0) {
    std::ofstream(log, std::ios::app) << "cannot run " << argv[0] << ": " << std::strerror(started) << "\n";
    return -1;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && fs::file_size(log) == 0) {
    // The child could not exec (glibc reports some failures only this way).
    std::ofstream(log, std::ios::app) << "cannot run " << argv[0] << "\n";
    return -1;
  }
  if (WIFSIGNALED(status)) {
    std::ofstream(log, std::ios::app) << argv[0] << " was killed by signal " << WTERMSIG(status) << "\n";
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_log(const fs::path& log) {
  std::string s = read_file(log, "exporter log");
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  constexpr size_t kTail = 4000;
  return s.size() > kTail ? "..." + s.substr(s.size() - kTail) : s;
}

/// ONNX or TorchScript from the safetensors file `weights`, through the Python exporter.
std::vector<std::string> export_with_python(const fs::path& weights, const std::string& format,
                                            const fs::path& out, const std::string& python,
                                            const std::string& script) {
  const fs::path log = out.string() + ".log.tmp";
  const std::vector<std::string> argv = {python, script, "export", weights.string(),
                                         "--format", format, "--out", out.string()};
  const int code = run_process(argv, log);
  const std::string output = read_log(log);
  std::error_code ignored;
  fs::remove(log, ignored);
  if (code != 0) {
    // The first line says what failed and what to do (the CLI prints only the first line of an
    // error it has no exit code for); the script's whole output follows for library callers.
    const auto last_break = output.rfind('\n');
    std::string summary = last_break == std::string::npos ? output : output.substr(last_break + 1);
    if (summary.empty()) summary = "exit status " + std::to_string(code);
    if (code == -1 || output.find("No module named") != std::string::npos) {
      summary += "; " + format + " export needs Python with PyTorch: on Debian, apt-get install python3-torch" +
                 (format == "onnx" ? " python3-onnx" : "") + ", or name one with --python or MMINTENT_PYTHON";
    }
    throw Error("exporting to " + format + " with " + python + " failed: " + summary + "\n" + output);
  }
  // The script's last line: {"inputs": [...], "outputs": [...]}.
  const auto last = output.rfind('\n');
  const auto summary = nlohmann::json::parse(last == std::string::npos ? output : output.substr(last + 1), nullptr, false);
  if (summary.is_discarded() || !summary.contains("inputs")) {
    throw Error("the exporter's output ends without its summary line:\n" + output);
  }
  return summary.at("inputs").get<std::vector<std::string>>();
}

}  // namespace

ExportResult export_run(const std::string& run_dir, const ExportOptions& options) {
  const bool python_step = options.format == "onnx" || options.format == "torchscript";
  if (options.format != "safetensors" && !python_step) {
    throw ConfigError("", "--format", 0, "'" + options.format + "' is not one of: safetensors, onnx, torchscript");
  }
  const RunDirectory run(run_dir);
  run.require_finished();
  if (run.has_ensemble()) {
    throw CheckpointError("'" + run.str() + "' is an ensemble run: export its members one by one (ensemble.json "
                          "lists them); an exported model is one network");
  }
  const Config config = run.load_config();
  const RunData data = load_run_data(run, config);
  auto model = load_run_model(run, config, data, c10::Device(c10::kCPU));
  const StateDict state = copy_state(*model, /*to_cpu=*/true);

  nlohmann::ordered_json metadata = nlohmann::ordered_json::object();
  metadata["format"] = "pt";  // tensor layout as PyTorch's (row-major, NCHW)
  metadata["producer"] = "mmintent";
  metadata["architecture"] = architecture(*model, config).dump();
  metadata["labels"] = nlohmann::json(data.labels.names()).dump();
  metadata["config"] = to_yaml(config);

  ExportResult result;
  const std::string extension = options.format == "torchscript" ? "torchscript.pt" : options.format;
  result.path = options.out.empty() ? (run.path() / ("model." + extension)).string() : options.out;
  if (!python_step) {
    write_safetensors(state, metadata, result.path);
  } else {
    // The weights travel to the script as a safetensors file next to the output, removed after.
    const fs::path weights = result.path + ".weights.safetensors.tmp";
    try {
      write_safetensors(state, metadata, weights);
      result.exporter = export_script();
      result.inputs = export_with_python(weights, options.format, result.path, python_interpreter(options.python),
                                         result.exporter);
    } catch (...) {
      std::error_code ignored;
      fs::remove(weights, ignored);
      fs::remove(result.path + ".tmp", ignored);  // the script's unfinished output
      throw;
    }
    fs::remove(weights);
  }
  result.tensors = static_cast<int64_t>(state.size());
  result.bytes = static_cast<int64_t>(fs::file_size(result.path));
  return result;
}

}  // namespace mmintent
