#pragma once
/// `mmintent export`: a finished run's model in a format other tools read (docs/EXPORT.md).
///
/// - safetensors (huggingface/safetensors), written here: every parameter and buffer of the
///   model under the names mmintent's checkpoints use (e.g. "text_encoder.rnn.weight_ih_l0"),
///   little-endian, in the model's order; the header's __metadata__ holds the architecture
///   (JSON), the labels in class order (JSON) and the run's effective config (YAML), so the file
///   alone says what it is.
/// - onnx, torchscript: tools/export/mmintent_export.py, on Debian's python3-torch, rebuilds the
///   architecture in PyTorch from that safetensors file, loads its weights and exports the
///   network: inputs text_ids [B,T] int64, text_lengths [B] int64, text_mask [B] float, image
///   [B,C,H,W] float (normalised), image_mask [B] float (the modalities the model uses, in
///   that order); output logits [B,K].

#include <cstdint>
#include <string>
#include <vector>

namespace mmintent {

struct ExportOptions {
  std::string format = "safetensors";  ///< safetensors, onnx or torchscript
  /// The file to write; empty: RUN_DIR/model.<safetensors|onnx|torchscript.pt>.
  std::string out;
  /// The Python with torch for onnx and torchscript; empty: $MMINTENT_PYTHON, else
  /// /usr/bin/python3 (Debian's, where python3-torch installs), else python3 on PATH.
  std::string python;
};

struct ExportResult {
  std::string path;     ///< the file written
  int64_t tensors = 0;  ///< parameters and buffers exported
  int64_t bytes = 0;    ///< file size
  /// onnx and torchscript: the network's input names, in order, and the exporter script run.
  std::vector<std::string> inputs;
  std::string exporter;
};

/// Writes the run's final model (model.pt) as `options.format`, atomically (a temporary file
/// renamed). Throws CheckpointError for a run that is missing or unfinished or a file that
/// cannot be written, ConfigError for an unknown format, Error when the Python step fails (its
/// message says what to install when torch is missing).
ExportResult export_run(const std::string& run_dir, const ExportOptions& options = {});

}  // namespace mmintent
