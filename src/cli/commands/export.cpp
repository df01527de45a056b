// mmintent export RUN_DIR [--format safetensors|onnx|torchscript] [--out FILE]
#include "command.h"

#include "mmintent/app/export.h"

#include <iostream>
#include <memory>

namespace mmintent::cli {

Command add_export(CLI::App& app) {
  auto s = std::make_shared<ExportOptions>();
  auto run_dir = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("export", "Write a finished run's model in a format other tools read");
  cmd->footer(
      "Examples:\n"
      "  mmintent export runs/demo --format safetensors --out demo.safetensors\n"
      "  mmintent export runs/demo --format onnx   # runs/demo/model.onnx (needs python3-torch)\n"
      "See docs/EXPORT.md for the inputs the exported network takes.");
  cmd->add_option("run_dir", *run_dir, "Run directory written by 'train' or 'tune'")->required();
  cmd->add_option("--format", s->format,
                  "safetensors (weights, architecture, labels and config; written here), onnx or "
                  "torchscript (the network, through tools/export/mmintent_export.py on Python with PyTorch)")
      ->check(CLI::IsMember({"safetensors", "onnx", "torchscript"}))
      ->capture_default_str();
  cmd->add_option("--out", s->out, "The file to write (default: RUN_DIR/model.safetensors, model.onnx or model.torchscript.pt)");
  cmd->add_option("--python", s->python,
                  "Python with PyTorch for onnx and torchscript (default: $MMINTENT_PYTHON, else /usr/bin/python3)");
  return {cmd, [s, run_dir]() -> int {
            const auto r = export_run(*run_dir, *s);
            std::cout << "wrote " << r.path << " (" << r.tensors << " tensors, " << r.bytes << " bytes)\n";
            if (!r.inputs.empty()) {
              std::cout << "inputs:";
              for (const auto& name : r.inputs) std::cout << ' ' << name;
              std::cout << "; output: logits\nexported by " << r.exporter << "\n";
            }
            return kOk;
          }};
}

}  // namespace mmintent::cli
