#include "mmintent/models/detail/fused_norm.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <vector>

// Layout: channels-last data is a [rows, C] matrix (rows = N*H*W, in n, h, w order), so every
// pass below runs along contiguous channel vectors, and a 2x2 pooling window is four such
// vectors: (h, w), (h, w+1), (h+1, w), (h+1, w+1).
//
// Forward: pass 1 sums each channel, pass 2 its squared deviations (two passes, as LibTorch, so
// that a large mean does not cost the variance its precision); pass 3 writes
// relu(x * scale + shift), scale = weight * invstd, shift = bias - mean * scale, and with
// pooling only each window's maximum (max and ReLU commute). Backward: pass 1 recomputes the
// ReLU mask (and each window's first maximum, the element LibTorch's pooling routes the
// gradient to) from the saved input, writes the gradient that reaches the batch norm's output
// and sums it and its product with (x - mean) per channel; pass 2 turns it into the input's
// gradient in place.
//
// Sums over rows are split in a fixed number of chunks (independent of the thread count), each
// summed in double, then added in chunk order: the results are the same with any number of
// threads.

namespace mmintent {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kMaxChunks = 64;
constexpr int64_t kChunkElements = 32768;  ///< about 128 KiB of float per chunk

int64_t grain(int64_t unit_elements) {
  return std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, unit_elements));
}

/// Sums `width` doubles per chunk of `units` (each of `unit_elements` elements): `body(lo, hi,
/// acc)` adds units [lo, hi) into acc[0, width). Returns the chunks' sums added in order.
template <class Body>
std::vector<double> chunked_sums(int64_t units, int64_t unit_elements, int64_t width,
                                 const Body& body) {
  const int64_t per = grain(unit_elements);
  const int64_t chunks = std::clamp<int64_t>((units + per - 1) / per, 1, kMaxChunks);
  std::vector<double> part(static_cast<size_t>(chunks * width), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      body(units * k / chunks, units * (k + 1) / chunks, part.data() + k * width);
    }
  });
  std::vector<double> total(static_cast<size_t>(width), 0.0);
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t j = 0; j < width; ++j) total[j] += part[k * width + j];
  }
  return total;
}

struct Shape {
  int64_t n, c, h, w;
  explicit Shape(const at::Tensor& x) : n(x.size(0)), c(x.size(1)), h(x.size(2)), w(x.size(3)) {}
  int64_t rows() const { return n * h * w; }
};

// The row loops are compiled for AVX-512 and AVX2 beside the baseline and chosen at load time
// (the rest of the library is built for the baseline x86-64, SSE2): each loop runs along a
// channel vector, which the compiler vectorises. GCC clones templates too; other compilers
// build the baseline only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define MMINTENT_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MMINTENT_VECTOR_CLONES
#endif

/// acc[j] += x[r, j] over `rows` rows of `c` channels.
template <typename T>
MMINTENT_VECTOR_CLONES void sum_rows(const T* __restrict x, int64_t rows, int64_t c,
                                   double* __restrict acc) {
  for (int64_t r = 0; r < rows; ++r, x += c) {
    for (int64_t j = 0; j < c; ++j) acc[j] += static_cast<double>(x[j]);
  }
}

/// acc[j] += (x[r, j] - mean[j])^2.
template <typename T>
MMINTENT_VECTOR_CLONES void sum_squares(const T* __restrict x, int64_t rows, int64_t c,
                                      const double* __restrict mean, double* __restrict acc) {
  for (int64_t r = 0; r < rows; ++r, x += c) {
    for (int64_t j = 0; j < c; ++j) {
      const double d = static_cast<double>(x[j]) - mean[j];
      acc[j] += d * d;
    }
  }
}

template <typename T>
inline T relu(T v) {
  return v < T(0) ? T(0) : v;  // NaN stays NaN, as LibTorch's relu
}

/// y = relu(x * a + b).
template <typename T>
MMINTENT_VECTOR_CLONES void norm_relu(const T* __restrict x, int64_t rows, int64_t c,
                                    const T* __restrict a, const T* __restrict b,
                                    T* __restrict y) {
  for (int64_t r = 0; r < rows; ++r, x += c, y += c) {
    for (int64_t j = 0; j < c; ++j) y[j] = relu(x[j] * a[j] + b[j]);
  }
}

/// The maximum of a 2x2 window (v0: (h, w), v1: (h, w+1), v2: (h+1, w), v3: (h+1, w+1)),
/// taken in row order as LibTorch's pooling does; pool_grad follows the same chain to find the
/// first maximum, where a tie's gradient goes.
template <typename T>
inline T window_max(T v0, T v1, T v2, T v3) {
  T m = v0;
  m = v1 > m ? v1 : m;
  m = v2 > m ? v2 : m;
  m = v3 > m ? v3 : m;
  return m;
}

/// One output row of the pooled layer: `wo` windows whose top-left rows start at x, `stride`
/// (W * c) elements between the window's two input rows.
template <typename T>
MMINTENT_VECTOR_CLONES void norm_relu_pool(const T* __restrict x, int64_t wo, int64_t c,
                                         int64_t stride, const T* __restrict a,
                                         const T* __restrict b, T* __restrict y) {
  for (int64_t ow = 0; ow < wo; ++ow, x += 2 * c, y += c) {
    const T* __restrict x1 = x + c;
    const T* __restrict x2 = x + stride;
    const T* __restrict x3 = x2 + c;
    for (int64_t j = 0; j < c; ++j) {
      y[j] = relu(window_max(x[j] * a[j] + b[j], x1[j] * a[j] + b[j], x2[j] * a[j] + b[j],
                             x3[j] * a[j] + b[j]));
    }
  }
}

/// d = g where x * a + b > 0 (the ReLU let it through), else 0; sum_d[j] += d, sum_dx[j] +=
/// d (x - mean). (Two loops per row: GCC does not vectorise the select and the double sums in
/// one.)
template <typename T>
MMINTENT_VECTOR_CLONES void relu_grad(const T* __restrict x, const T* __restrict g, int64_t rows,
                                      int64_t c, const T* __restrict a, const T* __restrict b,
                                      const T* __restrict mean, T* __restrict d,
                                      double* __restrict sum_d, double* __restrict sum_dx) {
  for (int64_t r = 0; r < rows; ++r, x += c, g += c, d += c) {
    for (int64_t j = 0; j < c; ++j) d[j] = x[j] * a[j] + b[j] > T(0) ? g[j] : T(0);
    for (int64_t j = 0; j < c; ++j) {
      sum_d[j] += static_cast<double>(d[j]);
      sum_dx[j] += static_cast<double>(d[j]) * static_cast<double>(x[j] - mean[j]);
    }
  }
}

/// The pooled layer's backward for one output row: the gradient goes to each window's first
/// maximum where the ReLU let it through, the other three get 0; sums as relu_grad's. `v`,
/// `vx`: scratch for c values.
template <typename T>
MMINTENT_VECTOR_CLONES void pool_grad(const T* __restrict x, const T* __restrict g, int64_t wo,
                                      int64_t c, int64_t stride, const T* __restrict a,
                                      const T* __restrict b, const T* __restrict mean,
                                      T* __restrict d, T* __restrict v, T* __restrict vx,
                                      double* __restrict sum_d, double* __restrict sum_dx) {
  for (int64_t ow = 0; ow < wo; ++ow, x += 2 * c, d += 2 * c, g += c) {
    const T* __restrict x1 = x + c;
    const T* __restrict x2 = x + stride;
    const T* __restrict x3 = x2 + c;
    T* __restrict d1 = d + c;
    T* __restrict d2 = d + stride;
    T* __restrict d3 = d2 + c;
    for (int64_t j = 0; j < c; ++j) {
      // window_max's chain, remembering which element took the maximum over (selects only, so
      // that the loop vectorises): the last of v1, v2, v3 that did, else v0.
      const T x0j = x[j], x1j = x1[j], x2j = x2[j], x3j = x3[j], gj = g[j];
      const T v1 = x1j * a[j] + b[j], v2 = x2j * a[j] + b[j], v3 = x3j * a[j] + b[j];
      T m = x0j * a[j] + b[j];
      const bool s1 = v1 > m;
      m = s1 ? v1 : m;
      const bool s2 = v2 > m;
      m = s2 ? v2 : m;
      const bool s3 = v3 > m;
      m = s3 ? v3 : m;
      const T xk = s3 ? x3j : s2 ? x2j : s1 ? x1j : x0j;
      const T through = m > T(0) ? gj : T(0);
      d3[j] = s3 ? through : T(0);
      const T after3 = s3 ? T(0) : through;  // what is left for the earlier elements
      d2[j] = s2 ? after3 : T(0);
      const T after2 = s2 ? T(0) : after3;
      d1[j] = s1 ? after2 : T(0);
      d[j] = s1 ? T(0) : after2;
      v[j] = through;
      vx[j] = through * (xk - mean[j]);
    }
    for (int64_t j = 0; j < c; ++j) {
      sum_d[j] += static_cast<double>(v[j]);
      sum_dx[j] += static_cast<double>(vx[j]);
    }
  }
}

/// d = gain * (d - mean_g - (x - mean) * slope).
template <typename T>
MMINTENT_VECTOR_CLONES void input_grad(const T* __restrict x, int64_t rows, int64_t c,
                                     const T* __restrict gain, const T* __restrict mean_g,
                                     const T* __restrict mean, const T* __restrict slope,
                                     T* __restrict d) {
  for (int64_t r = 0; r < rows; ++r, x += c, d += c) {
    for (int64_t j = 0; j < c; ++j) d[j] = gain[j] * (d[j] - mean_g[j] - (x[j] - mean[j]) * slope[j]);
  }
}


/// Per channel: scale = weight * invstd, shift = bias - mean * scale, from the saved (rounded)
/// statistics, so that the forward and backward passes compute the same normalised values.
template <typename T>
void affine(const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& mean,
            const at::Tensor& invstd, std::vector<T>& scale, std::vector<T>& shift) {
  const int64_t c = mean.numel();
  const T* w = weight.data_ptr<T>();
  const T* b = bias.data_ptr<T>();
  const T* m = mean.data_ptr<T>();
  const T* s = invstd.data_ptr<T>();
  scale.resize(static_cast<size_t>(c));
  shift.resize(static_cast<size_t>(c));
  for (int64_t j = 0; j < c; ++j) {
    scale[j] = w[j] * s[j];
    shift[j] = b[j] - m[j] * scale[j];
  }
}

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  double eps, bool pool, at::Tensor& y, at::Tensor& mean_out,
                  at::Tensor& invstd_out, at::Tensor& var_unbiased_out) {
  const Shape s(x);
  const int64_t c = s.c, rows = s.rows();
  const T* px = x.data_ptr<T>();
  const auto sums = chunked_sums(rows, c, c, [&](int64_t lo, int64_t hi, double* acc) {
    sum_rows(px + lo * c, hi - lo, c, acc);
  });
  std::vector<double> mean(static_cast<size_t>(c));
  for (int64_t j = 0; j < c; ++j) mean[j] = sums[j] / static_cast<double>(rows);
  const auto squares = chunked_sums(rows, c, c, [&](int64_t lo, int64_t hi, double* acc) {
    sum_squares(px + lo * c, hi - lo, c, mean.data(), acc);
  });
  T* pm = mean_out.data_ptr<T>();
  T* ps = invstd_out.data_ptr<T>();
  T* pv = var_unbiased_out.data_ptr<T>();
  for (int64_t j = 0; j < c; ++j) {
    pm[j] = static_cast<T>(mean[j]);
    ps[j] = static_cast<T>(1.0 / std::sqrt(squares[j] / static_cast<double>(rows) + eps));
    pv[j] = static_cast<T>(squares[j] / static_cast<double>(rows - 1));
  }
  std::vector<T> scale, shift;
  affine<T>(weight, bias, mean_out, invstd_out, scale, shift);
  T* py = y.data_ptr<T>();
  if (!pool) {
    at::parallel_for(0, rows, grain(c), [&](int64_t lo, int64_t hi) {
      norm_relu(px + lo * c, hi - lo, c, scale.data(), shift.data(), py + lo * c);
    });
    return;
  }
  const int64_t ho = s.h / 2, wo = s.w / 2;
  at::parallel_for(0, s.n * ho, grain(wo * c * 4), [&](int64_t lo, int64_t hi) {
    for (int64_t u = lo; u < hi; ++u) {  // u = (image, output row)
      const int64_t img = u / ho, oh = u % ho;
      norm_relu_pool(px + (img * s.h + 2 * oh) * s.w * c, wo, c, s.w * c, scale.data(),
                     shift.data(), py + u * wo * c);
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                   const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& invstd,
                   bool pool, at::Tensor& dx, at::Tensor& dweight, at::Tensor& dbias) {
  const Shape s(x);
  const int64_t c = s.c, rows = s.rows();
  std::vector<T> scale, shift;
  affine<T>(weight, bias, mean, invstd, scale, shift);
  const T* pm = mean.data_ptr<T>();
  const T* px = x.data_ptr<T>();
  const T* pg = grad.data_ptr<T>();
  T* pd = dx.data_ptr<T>();
  // Pass 1: the gradient at the batch norm's output (into dx), and per channel its sum
  // (acc[0, c)) and its sum with (x - mean) (acc[c, 2c)).
  std::vector<double> sums;
  if (!pool) {
    sums = chunked_sums(rows, c, 2 * c, [&](int64_t lo, int64_t hi, double* acc) {
      relu_grad(px + lo * c, pg + lo * c, hi - lo, c, scale.data(), shift.data(), pm,
                pd + lo * c, acc, acc + c);
    });
  } else {
    const int64_t ho = s.h / 2, wo = s.w / 2;
    if (s.h % 2 || s.w % 2) dx.zero_();  // the rows/columns the pooling dropped
    sums = chunked_sums(s.n * ho, wo * c * 4, 2 * c, [&](int64_t lo, int64_t hi, double* acc) {
      std::vector<T> scratch(static_cast<size_t>(2 * c));
      for (int64_t u = lo; u < hi; ++u) {
        const int64_t img = u / ho, oh = u % ho;
        const int64_t offset = (img * s.h + 2 * oh) * s.w * c;
        pool_grad(px + offset, pg + u * wo * c, wo, c, s.w * c, scale.data(), shift.data(), pm,
                  pd + offset, scratch.data(), scratch.data() + c, acc, acc + c);
      }
    });
  }
  // Pass 2: dx = weight * invstd * (g - mean(g) - (x - mean) * invstd^2 * mean(g (x - mean))).
  const T* ps = invstd.data_ptr<T>();
  const T* pw = weight.data_ptr<T>();
  std::vector<T> gain(static_cast<size_t>(c)), mean_g(static_cast<size_t>(c)),
      slope(static_cast<size_t>(c));
  T* pdw = dweight.data_ptr<T>();
  T* pdb = dbias.data_ptr<T>();
  const double n = static_cast<double>(rows);
  for (int64_t j = 0; j < c; ++j) {
    gain[j] = pw[j] * ps[j];
    mean_g[j] = static_cast<T>(sums[j] / n);
    slope[j] = static_cast<T>(sums[c + j] / n) * ps[j] * ps[j];
    pdw[j] = static_cast<T>(sums[c + j]) * ps[j];
    pdb[j] = static_cast<T>(sums[j]);
  }
  at::parallel_for(0, rows, grain(c), [&](int64_t lo, int64_t hi) {
    input_grad(px + lo * c, hi - lo, c, gain.data(), mean_g.data(), pm, slope.data(),
               pd + lo * c);
  });
}

at::Tensor channels_last_empty(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

struct BatchNormReluPool : torch::autograd::Function<BatchNormReluPool> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& running_mean,
                            const at::Tensor& running_var, double momentum, double eps,
                            bool pool) {
    TORCH_CHECK(detail::fused_norm_supported(x),
                "batch_norm_relu_pool: the fused kernel needs a 4-D float or double CPU tensor "
                "in channels-last order, got ", x.scalar_type(), " ", x.sizes(), " on ",
                x.device());
    const Shape s(x);
    TORCH_CHECK(s.rows() > 1, "batch_norm_relu_pool: expected more than 1 value per channel "
                "when training, got input size ", x.sizes());
    for (const auto* t : {&weight, &bias, &running_mean, &running_var}) {
      TORCH_CHECK(t->defined() && t->numel() == s.c && t->scalar_type() == x.scalar_type() &&
                      t->device().is_cpu() && t->is_contiguous(),
                  "batch_norm_relu_pool: weight, bias and running statistics must be ", s.c,
                  " contiguous values of x's dtype on the CPU");
    }
    TORCH_CHECK(!pool || (s.h >= 2 && s.w >= 2),
                "batch_norm_relu_pool: 2x2 pooling needs at least 2x2 pixels, got ", x.sizes());
    auto mean = at::empty({s.c}, x.options()), invstd = at::empty_like(mean),
         var = at::empty_like(mean);
    auto y = pool ? channels_last_empty({s.n, s.c, s.h / 2, s.w / 2}, x)
                  : channels_last_empty({s.n, s.c, s.h, s.w}, x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_relu_pool", [&] {
      forward_impl<scalar_t>(x, weight, bias, eps, pool, y, mean, invstd, var);
    });
    {
      at::NoGradGuard no_grad;
      running_mean.mul_(1 - momentum).add_(mean, momentum);
      running_var.mul_(1 - momentum).add_(var, momentum);
    }
    ctx->save_for_backward({x, weight, bias, mean, invstd});
    ctx->saved_data["pool"] = pool;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const bool pool = ctx->saved_data["pool"].toBool();
    auto dx = channels_last_empty(x.sizes(), x);
    auto dweight = at::empty_like(saved[1]), dbias = at::empty_like(saved[2]);
    const Shape s(x);
    const auto grad =
        (grads[0].defined() ? grads[0].to(x.scalar_type())
                            : at::zeros(pool ? at::IntArrayRef{s.n, s.c, s.h / 2, s.w / 2}
                                             : x.sizes(),
                                        x.options()))
            .contiguous(at::MemoryFormat::ChannelsLast);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_relu_pool_backward", [&] {
      backward_impl<scalar_t>(grad, x, saved[1], saved[2], saved[3], saved[4], pool, dx,
                              dweight, dbias);
    });
    return {dx, dweight, dbias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

namespace detail {

bool fused_norm_supported(const at::Tensor& x) {
  return x.defined() && x.device().is_cpu() && x.dim() == 4 &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) &&
         x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

at::Tensor batch_norm_relu_pool(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, const at::Tensor& running_mean,
                                const at::Tensor& running_var, double momentum, double eps,
                                bool pool) {
  return BatchNormReluPool::apply(x, weight, bias, running_mean, running_var, momentum, eps,
                                  pool);
}

}  // namespace detail
}  // namespace mmintent
