#include "mmintent/training/checkpoint.h"

#include "mmintent/error.h"
#include "mmintent/training/detail/archive.h"

#include <ATen/Context.h>
#include <torch/serialize/archive.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>

namespace mmintent {
namespace fs = std::filesystem;
namespace {

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

/// The optimizer's kind as saved in checkpoints ("adamw", "sgd", "adam", or "other").
std::string optimizer_kind(const torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer)) return "adamw";
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer)) return "sgd";
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer)) return "adam";
  return "other";
}

void write_state(torch::serialize::OutputArchive& archive, const StateDict& state) {
  for (const auto& [name, tensor] : state) archive.write(name, tensor);
}

/// A LibTorch error as one line naming the file.
CheckpointError unreadable(const std::string& path, const std::exception& e) {
  return CheckpointError(detail::unreadable_message(path, e));
}

StateDict read_state(torch::serialize::InputArchive& archive, const torch::nn::Module& shape_of) {
  StateDict out;
  for (const auto& [name, ref] : copy_state(shape_of)) {
    at::Tensor t;
    // A missing tensor is left out: load_state then names it as an architecture mismatch.
    if (archive.try_read(name, t)) out.emplace_back(name, t);
  }
  return out;
}

}  // namespace

StateDict copy_state(const torch::nn::Module& module, bool to_cpu) {
  StateDict out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    auto t = p.value().detach();
    out.emplace_back(p.key(), to_cpu ? t.to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true)
                                     : t.clone());
  }
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    auto t = b.value().detach();
    out.emplace_back(b.key(), to_cpu ? t.to(torch::kCPU, false, true) : t.clone());
  }
  return out;
}

void load_state(torch::nn::Module& module, const StateDict& state, const std::string& origin) {
  std::unordered_map<std::string, at::Tensor> by_name(state.begin(), state.end());
  torch::NoGradGuard no_grad;
  auto assign = [&](const std::string& name, at::Tensor target) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      throw CheckpointError(origin + ": has no tensor '" + name +
                            "' (was it written by a different model architecture?)");
    }
    if (!it->second.sizes().equals(target.sizes())) {
      throw CheckpointError(origin + ": tensor '" + name + "' has shape " +
                            shape_str(it->second.sizes()) + ", but the model expects " +
                            shape_str(target.sizes()) + " (a different model architecture?)");
    }
    target.copy_(it->second);
  };
  for (auto& p : module.named_parameters(true)) assign(p.key(), p.value());
  for (auto& b : module.named_buffers(true)) assign(b.key(), b.value());
}

void save_checkpoint(const std::string& path, const torch::nn::Module& model,
                     const torch::optim::Optimizer* optimizer, const TrainingState& state,
                     const StateDict* best, const c10::Device& device) {
  torch::serialize::OutputArchive archive;
  archive.write("format_version", c10::IValue(detail::kWeightsFormatVersion));
  torch::serialize::OutputArchive weights;
  write_state(weights, copy_state(model));
  archive.write("model", weights);
  if (optimizer) {
    torch::serialize::OutputArchive opt;
    optimizer->save(opt);
    archive.write("optimizer", opt);
    archive.write("optimizer_kind", c10::IValue(optimizer_kind(*optimizer)));
  }
  if (best && !best->empty()) {
    torch::serialize::OutputArchive best_archive;
    write_state(best_archive, *best);
    archive.write("best_model", best_archive);
  }
  archive.write("state.epochs_completed", c10::IValue(state.epochs_completed));
  archive.write("state.global_step", c10::IValue(state.global_step));
  archive.write("state.world_size", c10::IValue(state.world_size));
  const auto& es = state.early_stopping;
  archive.write("state.es.has_best", c10::IValue(es.has_best));
  archive.write("state.es.best_value", c10::IValue(es.best_value));
  archive.write("state.es.best_epoch", c10::IValue(es.best_epoch));
  archive.write("state.es.stalls", c10::IValue(es.stalls));
  archive.write("state.es.evaluations", c10::IValue(es.evaluations));
  archive.write("rng.cpu", at::globalContext().defaultGenerator(c10::kCPU).get_state());
  if (device.is_cuda()) {
    archive.write("rng.cuda", at::globalContext().defaultGenerator(device).get_state());
  }

  detail::save_archive(archive, path);
}

CheckpointData load_checkpoint(const std::string& path, torch::nn::Module& model,
                               torch::optim::Optimizer* optimizer, const c10::Device& device,
                               bool restore_rng) {
  CheckpointData data;
  auto archive = detail::open_archive(path, device);
  try {
    torch::serialize::InputArchive weights;
    archive.read("model", weights);
    load_state(model, read_state(weights, model), "checkpoint '" + path + "'");

    torch::serialize::InputArchive sub;
    if (optimizer && archive.try_read("optimizer", sub)) {
      c10::IValue kind;
      const std::string want = optimizer_kind(*optimizer);
      if (archive.try_read("optimizer_kind", kind) && kind.isString() && kind.toStringRef() != want) {
        throw CheckpointError("checkpoint '" + path + "' holds the state of an " + kind.toStringRef() +
                              " optimizer, but this run uses " + want +
                              " (was train.optimizer.type changed?)");
      }
      try {
        optimizer->load(sub);
      } catch (const std::exception& e) {
        std::string msg = e.what();
        if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
        throw CheckpointError("checkpoint '" + path + "': its optimizer state does not fit this run's " +
                              want + " optimizer (was train.optimizer changed?): " + msg);
      }
    }
    torch::serialize::InputArchive best_archive;
    if (archive.try_read("best_model", best_archive)) {
      data.best = read_state(best_archive, model);
      for (auto& [name, t] : data.best) t = t.to(torch::kCPU);
    }
    auto read_int = [&](const char* key, int64_t fallback) {
      c10::IValue iv;
      return archive.try_read(key, iv) ? iv.toInt() : fallback;
    };
    data.state.epochs_completed = read_int("state.epochs_completed", 0);
    data.state.global_step = read_int("state.global_step", 0);
    data.state.world_size = read_int("state.world_size", 1);  // files before multi-process runs
    auto& es = data.state.early_stopping;
    c10::IValue iv;
    if (archive.try_read("state.es.has_best", iv)) es.has_best = iv.toBool();
    if (archive.try_read("state.es.best_value", iv)) es.best_value = iv.toDouble();
    es.best_epoch = read_int("state.es.best_epoch", -1);
    es.stalls = read_int("state.es.stalls", 0);
    es.evaluations = read_int("state.es.evaluations", 0);

    if (restore_rng) {
      at::Tensor cpu_state;
      if (archive.try_read("rng.cpu", cpu_state)) {
        at::Generator gen = at::globalContext().defaultGenerator(c10::kCPU);
        gen.set_state(cpu_state.to(torch::kCPU));
      }
      at::Tensor cuda_state;
      if (device.is_cuda() && archive.try_read("rng.cuda", cuda_state)) {
        at::Generator gen = at::globalContext().defaultGenerator(device);
        gen.set_state(cuda_state.to(torch::kCPU));
      }
    }
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw unreadable(path, e);
  }
  return data;
}

WarmStart warm_start(torch::nn::Module& model, const std::string& path, const std::vector<std::string>& prefixes) {
  auto archive = detail::open_archive(path, c10::Device(c10::kCPU));
  torch::serialize::InputArchive weights;
  try {
    archive.read("model", weights);
  } catch (const std::exception& e) {
    throw unreadable(path, e);
  }
  auto under = [](const std::string& name, const std::string& prefix) {
    return name == prefix || name.rfind(prefix + ".", 0) == 0;
  };
  std::vector<std::pair<std::string, at::Tensor>> targets;
  for (auto& p : model.named_parameters(true)) targets.emplace_back(p.key(), p.value());
  for (auto& b : model.named_buffers(true)) targets.emplace_back(b.key(), b.value());
  for (const auto& prefix : prefixes) {
    bool any = false;
    for (const auto& [name, t] : targets) any |= under(name, prefix);
    if (!any) {
      std::set<std::string> parts;
      for (const auto& [name, t] : targets) parts.insert(name.substr(0, name.find('.')));
      std::string list;
      for (const auto& part : parts) list += (list.empty() ? "" : ", ") + part;
      throw CheckpointError("'" + prefix + "' names no part of this model (its parts: " + list + ")");
    }
  }
  WarmStart out;
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    bool wanted = prefixes.empty();
    for (const auto& prefix : prefixes) wanted |= under(name, prefix);
    if (!wanted) continue;
    at::Tensor t;
    const bool found = weights.try_read(name, t);
    if (!found || !t.sizes().equals(target.sizes())) {
      if (prefixes.empty()) {
        out.skipped.push_back(name);
        continue;
      }
      throw CheckpointError("checkpoint '" + path + "': " +
                            (found ? "tensor '" + name + "' has shape " + shape_str(t.sizes()) + ", but this model's is " +
                                         shape_str(target.sizes())
                                   : "has no tensor '" + name + "'") +
                            " (a part taken needs the same architecture)");
    }
    target.copy_(t);
    ++out.tensors;
    out.values += t.numel();
  }
  return out;
}

namespace detail {
namespace {
void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

std::string unreadable_message(const std::string& path, const std::exception& e) {
  std::string msg = e.what();
  if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
  return "cannot read checkpoint '" + path + "' (truncated or corrupt?): " + msg;
}

torch::serialize::InputArchive open_archive(const std::string& path, const c10::Device& device) {
  if (!fs::exists(path)) throw CheckpointError("checkpoint '" + path + "' does not exist");
  if (fs::is_directory(path)) throw CheckpointError("checkpoint '" + path + "' is a directory, not a file");
  torch::serialize::InputArchive archive;
  c10::IValue v;
  try {
    archive.load_from(path, device);
    if (!archive.try_read("format_version", v)) {
      throw CheckpointError("'" + path + "' is not an mmintent checkpoint (no format_version)");
    }
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError(unreadable_message(path, e));
  }
  if (v.toInt() != kWeightsFormatVersion) {
    throw CheckpointError("'" + path + "' has checkpoint format " + std::to_string(v.toInt()) +
                          ", this build reads " + std::to_string(kWeightsFormatVersion));
  }
  return archive;
}

void save_archive(torch::serialize::OutputArchive& archive, const std::string& path) {
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp";
  try {
    archive.save_to(tmp);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    throw CheckpointError("cannot write checkpoint '" + path + "': " + e.what());
  }
  fsync_path(tmp, false);
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw CheckpointError("cannot move checkpoint into place at '" + path + "': " + ec.message());
  }
  fsync_path(target.has_parent_path() ? target.parent_path().string() : ".", true);
}

}  // namespace detail

}  // namespace mmintent
