#include "mmintent/training/quantization.h"

#include "mmintent/error.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/detail/archive.h"

#include <torch/serialize/archive.h>
#include <torch/torch.h>

#include <sstream>

namespace mmintent {
namespace {

constexpr const char* kKind = "int8-rows-symmetric";

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

}  // namespace

bool quantizable(const at::Tensor& parameter) {
  return parameter.defined() && parameter.is_floating_point() && parameter.dim() >= 2;
}

Int8Tensor quantize_rows(const at::Tensor& w) {
  TORCH_CHECK(w.defined() && w.is_floating_point() && w.dim() >= 1, "quantize_rows: a floating-point tensor of one or "
              "more dimensions is needed, got ", w.defined() ? w.sizes() : at::IntArrayRef{});
  const auto rows = w.detach().to(torch::kFloat).reshape({w.size(0), -1});
  auto scales = rows.abs().amax(1) / 127.0;
  scales = torch::where(scales > 0, scales, torch::ones_like(scales));
  auto values = torch::round(rows / scales.unsqueeze(1)).clamp(-127, 127).to(torch::kChar).reshape(w.sizes());
  return {values, scales};
}

at::Tensor dequantize_rows(const Int8Tensor& q) {
  TORCH_CHECK(q.values.defined() && q.values.dim() >= 1 && q.scales.dim() == 1 && q.scales.size(0) == q.values.size(0),
              "dequantize_rows: one scale per row is needed");
  const auto rows = q.values.to(torch::kFloat).reshape({q.values.size(0), -1});
  return (rows * q.scales.to(rows.device(), torch::kFloat).unsqueeze(1)).reshape(q.values.sizes());
}

Int8Summary save_int8_weights(const std::string& path, const torch::nn::Module& model) {
  torch::serialize::OutputArchive archive, int8, scales, floats;
  archive.write("format_version", c10::IValue(detail::kWeightsFormatVersion));
  archive.write("kind", c10::IValue(std::string(kKind)));
  Int8Summary summary;
  torch::NoGradGuard no_grad;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    const auto w = p.value().detach().to(torch::kCPU);
    if (!quantizable(w)) {
      floats.write(p.key(), w.clone());
      ++summary.float_tensors;
      summary.float_values += w.numel();
      continue;
    }
    const auto q = quantize_rows(w);
    int8.write(p.key(), q.values);
    scales.write(p.key(), q.scales);
    ++summary.int8_tensors;
    summary.int8_values += w.numel();
    if (w.numel() > 0) {
      summary.max_abs_error = std::max(summary.max_abs_error,
                                       (dequantize_rows(q) - w.to(torch::kFloat)).abs().max().item<double>());
    }
  }
  for (const auto& b : model.named_buffers(/*recurse=*/true)) {
    floats.write(b.key(), b.value().detach().to(torch::kCPU).clone());
    ++summary.float_tensors;
    summary.float_values += b.value().numel();
  }
  archive.write("int8", int8);
  archive.write("scale", scales);
  archive.write("float", floats);
  detail::save_archive(archive, path);
  return summary;
}

void load_int8_weights(const std::string& path, torch::nn::Module& model, const c10::Device& device) {
  auto archive = detail::open_archive(path, c10::Device(c10::kCPU));
  const std::string origin = "int8 weights '" + path + "'";
  StateDict state;
  try {
    c10::IValue kind;
    if (!archive.try_read("kind", kind) || !kind.isString() || kind.toStringRef() != kKind) {
      throw CheckpointError("'" + path + "' is not an int8 weights file (written by mmintent quantize): " +
                            "a float checkpoint is model.pt");
    }
    torch::serialize::InputArchive int8, scales, floats;
    archive.read("int8", int8);
    archive.read("scale", scales);
    archive.read("float", floats);
    auto add = [&](const std::string& name, const at::Tensor& target) {
      at::Tensor values, row_scales, value;
      if (int8.try_read(name, values)) {
        if (!scales.try_read(name, row_scales) || values.scalar_type() != torch::kChar || values.dim() < 1 ||
            row_scales.dim() != 1 || row_scales.size(0) != values.size(0)) {
          throw CheckpointError(origin + ": tensor '" + name + "' has no int8 values with one scale per row");
        }
        value = dequantize_rows({values, row_scales}).to(target.scalar_type());
      } else if (!floats.try_read(name, value)) {
        throw CheckpointError(origin + ": has no tensor '" + name +
                              "' (was it written by a different model architecture?)");
      }
      if (!value.sizes().equals(target.sizes())) {
        throw CheckpointError(origin + ": tensor '" + name + "' has shape " + shape_str(value.sizes()) +
                              ", but the model expects " + shape_str(target.sizes()) +
                              " (a different model architecture?)");
      }
      state.emplace_back(name, value);
    };
    for (const auto& p : model.named_parameters(true)) add(p.key(), p.value());
    for (const auto& b : model.named_buffers(true)) add(b.key(), b.value());
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError(detail::unreadable_message(path, e));
  }
  model.to(device);
  load_state(model, state, origin);
}

}  // namespace mmintent
