#pragma once
/// How mmintent's weight files are written and opened (training/checkpoint.h's checkpoints,
/// training/quantization.h's int8 weights): one LibTorch archive, written atomically (a
/// temporary file, fsync, rename), read back with its format checked. Not installed API.

#include <c10/core/Device.h>
#include <torch/serialize/archive.h>

#include <string>

namespace mmintent::detail {

/// The format version every mmintent weight file carries ("format_version").
constexpr int64_t kWeightsFormatVersion = 1;

/// Writes `archive` to `path` through `path`.tmp, fsynced and renamed over it; the directory
/// is made. Throws CheckpointError naming the file.
void save_archive(torch::serialize::OutputArchive& archive, const std::string& path);

/// `path` loaded onto `device`: an existing file, an mmintent weight file of the format this
/// build reads. Throws CheckpointError naming the file.
torch::serialize::InputArchive open_archive(const std::string& path, const c10::Device& device);

/// A LibTorch error while reading `path`, as one line naming the file.
std::string unreadable_message(const std::string& path, const std::exception& e);

}  // namespace mmintent::detail
