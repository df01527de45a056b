#pragma once
/// int8 weights for deployment (`mmintent quantize`, docs/INT8.md): every weight matrix of a
/// model (a floating-point parameter of two or more dimensions: linear, recurrent, embedding
/// and convolution weights) stored as int8 with one float scale per output row, symmetric
/// (w ≈ scale_r × q, q in [-127, 127], scale_r = max|w_r| / 127); biases, norms' parameters and
/// buffers stay float. About a quarter of the float file. Loading turns the int8 weights back
/// into the model's float weights (weight-only quantisation): the model then runs the same
/// kernels as a float one, at the same speed, on any device, with each weight off by at most
/// half its row's scale.
///
/// Example:
///   save_int8_weights("run/model.int8.pt", *model);
///   load_int8_weights("run/model.int8.pt", *other, torch::kCPU);  // same architecture

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace torch::nn {
class Module;
}

namespace mmintent {

/// A tensor as int8 values and one scale per row (its first dimension).
struct Int8Tensor {
  at::Tensor values;  ///< int8, the tensor's shape
  at::Tensor scales;  ///< float32 [rows]; 1 for a row of zeros
};

/// `w` (floating point, at least one dimension, on any device) quantised row by row.
Int8Tensor quantize_rows(const at::Tensor& w);
/// The float32 tensor `q` stands for, on `q.values`' device.
at::Tensor dequantize_rows(const Int8Tensor& q);
/// Whether save_int8_weights stores the parameter as int8: floating point, two or more dimensions.
bool quantizable(const at::Tensor& parameter);

/// What an int8 weights file holds.
struct Int8Summary {
  int64_t int8_tensors = 0, int8_values = 0;    ///< weight matrices stored as int8
  int64_t float_tensors = 0, float_values = 0;  ///< the rest (biases, norms, buffers)
  double max_abs_error = 0;  ///< the largest |w - dequantized w| over the int8 weights
};

/// Writes the model's weights as int8 to `path`, atomically (a temporary file renamed).
/// Throws CheckpointError naming the file when it cannot be written.
Int8Summary save_int8_weights(const std::string& path, const torch::nn::Module& model);

/// Loads an int8 weights file written by save_int8_weights into `model` (same architecture),
/// dequantised, on `device`. Throws CheckpointError naming the file when it is missing,
/// truncated, not an int8 weights file, or lacks or misshapes one of the model's tensors.
void load_int8_weights(const std::string& path, torch::nn::Module& model, const c10::Device& device);

}  // namespace mmintent
