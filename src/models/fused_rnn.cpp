#include "mmintent/models/detail/fused_rnn.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

#include <vector>

// Layout: the packed data is time-major, step t's rows are the first batch_sizes[t] (sorted)
// sequences, and batch_sizes never increases. So the rows of a step that have a previous state
// are a prefix of its rows, and that previous state is a prefix of the previous step's rows
// (forward direction: step t-1; reverse: step t+1, whose rows are all continued at step t, the
// rest of step t's rows starting from zero). Every operator below works on such prefixes.

namespace mmintent {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Step {
  int64_t offset = 0;       ///< first row of this step in the packed data
  int64_t rows = 0;         ///< sequences active at this step
  int64_t prev_offset = 0;  ///< first row of the step whose state this one continues
  int64_t prev_rows = 0;    ///< how many of this step's rows continue a previous state
};

/// The steps in processing order (last time step first when `reverse`) of `rows` packed rows.
std::vector<Step> schedule(const at::Tensor& batch_sizes, bool reverse, int64_t rows) {
  TORCH_CHECK(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == at::kLong &&
                  batch_sizes.dim() == 1,
              "packed RNN: batch_sizes must be a CPU int64 vector");
  const auto* bs = batch_sizes.data_ptr<int64_t>();
  const int64_t steps = batch_sizes.size(0);
  std::vector<int64_t> offsets(static_cast<size_t>(steps) + 1, 0);
  for (int64_t t = 0; t < steps; ++t) {
    TORCH_CHECK(bs[t] > 0 && (t == 0 || bs[t] <= bs[t - 1]),
                "packed RNN: batch_sizes must be positive and non-increasing");
    offsets[t + 1] = offsets[t] + bs[t];
  }
  TORCH_CHECK(offsets.back() == rows, "packed RNN: batch_sizes sum to ", offsets.back(),
              " but the packed data has ", rows, " rows");
  std::vector<Step> order;
  order.reserve(static_cast<size_t>(steps));
  for (int64_t k = 0; k < steps; ++k) {
    const int64_t t = reverse ? steps - 1 - k : k;
    Step s;
    s.offset = offsets[t];
    s.rows = bs[t];
    const int64_t prev = reverse ? t + 1 : t - 1;
    if (prev >= 0 && prev < steps) {
      s.prev_offset = offsets[prev];
      s.prev_rows = std::min(bs[t], bs[prev]);
    }
    order.push_back(s);
  }
  return order;
}

/// For each packed row, the row holding its previous hidden state, or `zero_row` (a row of
/// zeros appended to the outputs) where the sequence starts: the left operand of dW_hh.
at::Tensor previous_rows(const std::vector<Step>& steps, int64_t total) {
  auto index = at::empty({total}, at::kLong);
  auto* p = index.data_ptr<int64_t>();
  for (const auto& s : steps) {
    for (int64_t r = 0; r < s.rows; ++r) {
      p[s.offset + r] = r < s.prev_rows ? s.prev_offset + r : total;
    }
  }
  return index;
}

/// out's previous hidden state for every packed row, zero where a sequence starts.
at::Tensor previous_states(const at::Tensor& out, const std::vector<Step>& steps) {
  auto padded = at::cat({out, at::zeros({1, out.size(1)}, out.options())});
  return padded.index_select(0, previous_rows(steps, out.size(0)));
}

/// Sequences in the batch: the rows of step 0.
int64_t sequences(const at::Tensor& batch_sizes) {
  return batch_sizes.size(0) > 0 ? batch_sizes.data_ptr<int64_t>()[0] : 0;
}

/// The gradient reaching the output [n, h] (zeros when it does not reach it), contiguous, in
/// the gates' dtype.
at::Tensor output_grad(const at::Tensor& grad, int64_t n, int64_t h,
                       const at::TensorOptions& options) {
  return grad.defined() ? grad.to(options.dtype()).contiguous() : at::zeros({n, h}, options);
}

void check_inputs(const char* what, int64_t gates, const at::Tensor& x,
                  const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih,
                  const at::Tensor& b_hh) {
  TORCH_CHECK(detail::fused_rnn_supported(x), what,
              ": the fused kernel needs float or double CPU tensors");
  TORCH_CHECK(x.dim() == 2, what, ": x must be packed data [N, input], got ", x.sizes());
  const int64_t h = w_hh.size(1);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == gates * h && w_ih.size(1) == x.size(1) &&
                  w_hh.dim() == 2 && w_hh.size(0) == gates * h && b_ih.numel() == gates * h &&
                  b_hh.numel() == gates * h,
              what, ": parameter shapes do not match (input ", x.size(1), ", hidden ", h, ")");
  for (const auto* t : {&w_ih, &w_hh, &b_ih, &b_hh}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device().is_cpu(), what,
                ": parameters must have x's dtype, on the CPU");
  }
}

/// Under CPU autocast, the lower precision the matrix products run in; else x's own dtype.
at::ScalarType product_dtype(const at::Tensor& x) {
  // at::autocast::is_cpu_enabled() (renamed in LibTorch 2.4) tests this key.
  if (c10::impl::tls_is_dispatch_key_excluded(c10::DispatchKey::AutocastCPU) ||
      x.scalar_type() != at::kFloat) {
    return x.scalar_type();
  }
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::get_autocast_dtype(at::kCPU);
#else
  return at::autocast::get_autocast_cpu_dtype();
#endif
}

/// The matrix products' precision: the data's own, or (under autocast, as LibTorch's kernels
/// would run them) bfloat16 operands, with the states, gates, element-wise passes and results
/// kept in the data's precision.
struct Gemm {
  at::ScalarType data;   ///< x's dtype: states, gates and gradients
  at::ScalarType dtype;  ///< the products' operands
  bool low;              ///< dtype != data
  explicit Gemm(const at::Tensor& x) : Gemm(x.scalar_type(), product_dtype(x)) {}
  Gemm(at::ScalarType data_dtype, at::ScalarType product)
      : data(data_dtype), dtype(product), low(data_dtype != product) {}
  /// The forward pass's choice, for the backward pass (x: the saved, cast input).
  void save(AutogradContext* ctx) const { ctx->saved_data["dtype"] = static_cast<int64_t>(data); }
  static Gemm saved(AutogradContext* ctx, const at::Tensor& x) {
    return Gemm(static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt()), x.scalar_type());
  }
  at::Tensor cast(const at::Tensor& t) const { return low ? t.to(dtype) : t; }
  at::Tensor result(const at::Tensor& t) const { return low ? t.to(data) : t; }
  /// bias + a b, in the data's precision.
  at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) const {
    return low ? at::add(bias, at::mm(a, b)) : at::addmm(bias, a, b);
  }
  /// out += a b.
  void addmm_(at::Tensor out, const at::Tensor& a, const at::Tensor& b) const {
    if (low) {
      out.add_(at::mm(cast(a), cast(b)));
    } else {
      out.addmm_(a, b);
    }
  }
  /// out = a b.
  void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) const {
    if (low) {
      out.copy_(at::mm(cast(a), cast(b)));
    } else {
      at::mm_out(out, a, b);
    }
  }
};

// ------------------------------------------------------------------------------------ LSTM
// Internally the gates are ordered i, f, o, g (LibTorch: i, f, g, o), so that one sigmoid
// covers three of them; swapping the last two blocks converts both ways.
at::Tensor swap_last_gates(const at::Tensor& w, int64_t h) {
  return at::cat({w.narrow(0, 0, 2 * h), w.narrow(0, 3 * h, h), w.narrow(0, 2 * h, h)});
}

struct LstmDirection : torch::autograd::Function<LstmDirection> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in,
                            const at::Tensor& batch_sizes, const at::Tensor& w_ih,
                            const at::Tensor& w_hh, const at::Tensor& b_ih,
                            const at::Tensor& b_hh, bool reverse) {
    check_inputs("packed_lstm_direction", 4, x_in, w_ih, w_hh, b_ih, b_hh);
    const Gemm mm(x_in);
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
    const auto x = mm.cast(x_in.contiguous());
    const int64_t n = x.size(0), h = w_hh.size(1);
    const auto steps = schedule(batch_sizes, reverse, n);
    const auto wih = mm.cast(swap_last_gates(w_ih, h));
    const auto whh = mm.cast(swap_last_gates(w_hh, h));
    // Pre-activations of all steps' input terms in one product; each step adds its recurrent
    // term in place and then holds the activated gates (saved for the backward pass).
    auto gates = mm.addmm(swap_last_gates(b_ih + b_hh, h), x, wih.t());
    const auto options = gates.options();
    auto cell = at::empty({n, h}, options);
    auto tanh_cell = at::empty({n, h}, options);
    auto out = at::empty({n, h}, options);
    // The hidden states as the recurrent products read them (a low-precision copy, or out).
    auto out_mm = mm.low ? at::empty({n, h}, x.options()) : out;
    const auto whh_t = whh.t();
    for (const auto& s : steps) {
      auto g = gates.narrow(0, s.offset, s.rows);
      if (s.prev_rows > 0) {
        mm.addmm_(g.narrow(0, 0, s.prev_rows), out_mm.narrow(0, s.prev_offset, s.prev_rows),
                  whh_t);
      }
      g.narrow(1, 0, 3 * h).sigmoid_();
      g.narrow(1, 3 * h, h).tanh_();
      AT_DISPATCH_FLOATING_TYPES(mm.data, "packed_lstm_cell", [&] {
        const auto* gp = g.data_ptr<scalar_t>();
        const auto* cprev = cell.data_ptr<scalar_t>() + s.prev_offset * h;
        auto* c = cell.data_ptr<scalar_t>() + s.offset * h;
        for (int64_t r = 0; r < s.rows; ++r) {
          const scalar_t* gi = gp + r * 4 * h;
          const scalar_t* gf = gi + h;
          const scalar_t* gg = gi + 3 * h;
          scalar_t* cr = c + r * h;
          if (r < s.prev_rows) {
            const scalar_t* cp = cprev + r * h;
            for (int64_t j = 0; j < h; ++j) cr[j] = gf[j] * cp[j] + gi[j] * gg[j];
          } else {
            for (int64_t j = 0; j < h; ++j) cr[j] = gi[j] * gg[j];
          }
        }
      });
      auto tc = tanh_cell.narrow(0, s.offset, s.rows);
      at::tanh_out(tc, cell.narrow(0, s.offset, s.rows));
      auto o = out.narrow(0, s.offset, s.rows);
      at::mul_out(o, g.narrow(1, 2 * h, h), tc);
      if (mm.low) out_mm.narrow(0, s.offset, s.rows).copy_(o);
    }
    ctx->save_for_backward({x, batch_sizes, wih, whh, gates, cell, tanh_cell, out_mm});
    ctx->saved_data["reverse"] = reverse;
    mm.save(ctx);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &batch_sizes = saved[1], &wih = saved[2], &whh = saved[3],
               &gates = saved[4], &cell = saved[5], &tanh_cell = saved[6], &out = saved[7];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
    const auto mm = Gemm::saved(ctx, x);
    const int64_t n = x.size(0), h = whh.size(1);
    const auto steps = schedule(batch_sizes, reverse, n);
    const int64_t batch = sequences(batch_sizes);
    const auto options = gates.options();
    const auto grad_out = output_grad(grad_outputs[0], n, h, options);
    auto d_gates = at::empty({n, 4 * h}, options);
    auto carry_h = at::zeros({batch, h}, options);  // dL/dh_prev from the later step
    auto carry_c = at::zeros({batch, h}, options);  // dL/dc_prev from the later step
    int64_t carried = 0;
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
      const auto& s = *it;
      AT_DISPATCH_FLOATING_TYPES(mm.data, "packed_lstm_cell_backward", [&] {
        const auto* gp = gates.data_ptr<scalar_t>() + s.offset * 4 * h;
        const auto* tcp = tanh_cell.data_ptr<scalar_t>() + s.offset * h;
        const auto* cprev = cell.data_ptr<scalar_t>() + s.prev_offset * h;
        const auto* dout = grad_out.data_ptr<scalar_t>() + s.offset * h;
        auto* dg = d_gates.data_ptr<scalar_t>() + s.offset * 4 * h;
        auto* ch = carry_h.data_ptr<scalar_t>();
        auto* cc = carry_c.data_ptr<scalar_t>();
        for (int64_t r = 0; r < s.rows; ++r) {
          const scalar_t* gi = gp + r * 4 * h;
          const scalar_t* gf = gi + h;
          const scalar_t* go = gi + 2 * h;
          const scalar_t* gg = gi + 3 * h;
          const scalar_t* tc = tcp + r * h;
          const scalar_t* dh_out = dout + r * h;
          scalar_t* di = dg + r * 4 * h;
          scalar_t* df = di + h;
          scalar_t* dO = di + 2 * h;
          scalar_t* dG = di + 3 * h;
          const bool has_carry = r < carried;
          const bool has_prev = r < s.prev_rows;
          scalar_t* chr = ch + r * h;
          scalar_t* ccr = cc + r * h;
          const scalar_t* cp = cprev + r * h;
          for (int64_t j = 0; j < h; ++j) {
            const scalar_t dh = dh_out[j] + (has_carry ? chr[j] : scalar_t(0));
            const scalar_t dc = (has_carry ? ccr[j] : scalar_t(0)) +
                                dh * go[j] * (scalar_t(1) - tc[j] * tc[j]);
            const scalar_t c_prev = has_prev ? cp[j] : scalar_t(0);
            di[j] = dc * gg[j] * gi[j] * (scalar_t(1) - gi[j]);
            df[j] = dc * c_prev * gf[j] * (scalar_t(1) - gf[j]);
            dO[j] = dh * tc[j] * go[j] * (scalar_t(1) - go[j]);
            dG[j] = dc * gi[j] * (scalar_t(1) - gg[j] * gg[j]);
            if (has_prev) ccr[j] = dc * gf[j];
          }
        }
      });
      if (s.prev_rows > 0) {
        mm.mm_into(carry_h.narrow(0, 0, s.prev_rows), d_gates.narrow(0, s.offset, s.prev_rows),
                   whh);
      }
      carried = s.prev_rows;
    }
    const auto d_gates_mm = mm.cast(d_gates);
    const auto d_x = mm.result(d_gates_mm.mm(wih));
    const auto d_gates_t = d_gates_mm.t();
    const auto d_wih = mm.result(swap_last_gates(d_gates_t.mm(x), h));
    const auto d_whh = mm.result(swap_last_gates(d_gates_t.mm(previous_states(out, steps)), h));
    const auto d_b = swap_last_gates(d_gates.sum(0), h);
    return {d_x, at::Tensor(), d_wih, d_whh, d_b, d_b.clone(), at::Tensor()};
  }
};

// ------------------------------------------------------------------------------------- GRU
// r = sigmoid(x W_ir + b_ir + h W_hr + b_hr), z likewise, n = tanh(x W_in + b_in +
// r * (h W_hn + b_hn)), h' = (1 - z) n + z h (LibTorch's definition).
struct GruDirection : torch::autograd::Function<GruDirection> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in,
                            const at::Tensor& batch_sizes, const at::Tensor& w_ih,
                            const at::Tensor& w_hh, const at::Tensor& b_ih,
                            const at::Tensor& b_hh, bool reverse) {
    check_inputs("packed_gru_direction", 3, x_in, w_ih, w_hh, b_ih, b_hh);
    const Gemm mm(x_in);
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
    const auto x = mm.cast(x_in.contiguous());
    const int64_t n = x.size(0), h = w_hh.size(1);
    const auto steps = schedule(batch_sizes, reverse, n);
    const auto wih = mm.cast(w_ih), whh = mm.cast(w_hh);
    // Input terms of all steps (then the activated r, z, n) and the recurrent terms.
    auto gx = mm.addmm(b_ih, x, wih.t());
    const auto options = gx.options();
    auto gh = at::empty({n, 3 * h}, options);
    auto out = at::empty({n, h}, options);
    auto out_mm = mm.low ? at::empty({n, h}, x.options()) : out;
    const auto whh_t = whh.t();
    for (const auto& s : steps) {
      auto hp = gh.narrow(0, s.offset, s.rows);
      hp.copy_(b_hh.expand_as(hp));
      if (s.prev_rows > 0) {
        mm.addmm_(hp.narrow(0, 0, s.prev_rows), out_mm.narrow(0, s.prev_offset, s.prev_rows),
                  whh_t);
      }
      auto g = gx.narrow(0, s.offset, s.rows);
      g.narrow(1, 0, 2 * h).add_(hp.narrow(1, 0, 2 * h)).sigmoid_();
      g.narrow(1, 2 * h, h).addcmul_(g.narrow(1, 0, h), hp.narrow(1, 2 * h, h)).tanh_();
      AT_DISPATCH_FLOATING_TYPES(mm.data, "packed_gru_cell", [&] {
        const auto* gp = g.data_ptr<scalar_t>();
        const auto* hprev = out.data_ptr<scalar_t>() + s.prev_offset * h;
        auto* o = out.data_ptr<scalar_t>() + s.offset * h;
        for (int64_t r = 0; r < s.rows; ++r) {
          const scalar_t* z = gp + r * 3 * h + h;
          const scalar_t* nn = z + h;
          scalar_t* orow = o + r * h;
          if (r < s.prev_rows) {
            const scalar_t* hp_r = hprev + r * h;
            for (int64_t j = 0; j < h; ++j) orow[j] = nn[j] + z[j] * (hp_r[j] - nn[j]);
          } else {
            for (int64_t j = 0; j < h; ++j) orow[j] = nn[j] - z[j] * nn[j];
          }
        }
      });
      if (mm.low) out_mm.narrow(0, s.offset, s.rows).copy_(out.narrow(0, s.offset, s.rows));
    }
    ctx->save_for_backward({x, batch_sizes, wih, whh, gx, gh, out, out_mm});
    ctx->saved_data["reverse"] = reverse;
    mm.save(ctx);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &batch_sizes = saved[1], &w_ih = saved[2], &w_hh = saved[3],
               &gx = saved[4], &gh = saved[5], &out = saved[6], &out_mm = saved[7];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
    const auto mm = Gemm::saved(ctx, x);
    const int64_t n = x.size(0), h = w_hh.size(1);
    const auto steps = schedule(batch_sizes, reverse, n);
    const int64_t batch = sequences(batch_sizes);
    const auto options = gx.options();
    const auto grad_out = output_grad(grad_outputs[0], n, h, options);
    auto d_gx = at::empty({n, 3 * h}, options);
    auto d_gh = at::empty({n, 3 * h}, options);
    auto carry = at::zeros({batch, h}, options);  // dL/dh_prev from the later step
    int64_t carried = 0;
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
      const auto& s = *it;
      AT_DISPATCH_FLOATING_TYPES(mm.data, "packed_gru_cell_backward", [&] {
        const auto* gp = gx.data_ptr<scalar_t>() + s.offset * 3 * h;
        const auto* hp = gh.data_ptr<scalar_t>() + s.offset * 3 * h;
        const auto* hprev = out.data_ptr<scalar_t>() + s.prev_offset * h;
        const auto* dout = grad_out.data_ptr<scalar_t>() + s.offset * h;
        auto* dx_p = d_gx.data_ptr<scalar_t>() + s.offset * 3 * h;
        auto* dh_p = d_gh.data_ptr<scalar_t>() + s.offset * 3 * h;
        auto* cp = carry.data_ptr<scalar_t>();
        for (int64_t r = 0; r < s.rows; ++r) {
          const scalar_t* gr = gp + r * 3 * h;
          const scalar_t* gz = gr + h;
          const scalar_t* gn = gr + 2 * h;
          const scalar_t* hn = hp + r * 3 * h + 2 * h;
          const scalar_t* dh_out = dout + r * h;
          scalar_t* dxr = dx_p + r * 3 * h;
          scalar_t* dhr = dh_p + r * 3 * h;
          const bool has_carry = r < carried;
          const bool has_prev = r < s.prev_rows;
          scalar_t* car = cp + r * h;
          const scalar_t* hpr = hprev + r * h;
          for (int64_t j = 0; j < h; ++j) {
            const scalar_t dh = dh_out[j] + (has_carry ? car[j] : scalar_t(0));
            const scalar_t h_prev = has_prev ? hpr[j] : scalar_t(0);
            const scalar_t dn = dh * (scalar_t(1) - gz[j]) * (scalar_t(1) - gn[j] * gn[j]);
            const scalar_t dr = dn * hn[j] * gr[j] * (scalar_t(1) - gr[j]);
            const scalar_t dz = dh * (h_prev - gn[j]) * gz[j] * (scalar_t(1) - gz[j]);
            dxr[j] = dr;
            dxr[h + j] = dz;
            dxr[2 * h + j] = dn;
            dhr[j] = dr;
            dhr[h + j] = dz;
            dhr[2 * h + j] = dn * gr[j];
            if (has_prev) car[j] = dh * gz[j];
          }
        }
      });
      if (s.prev_rows > 0) {
        mm.addmm_(carry.narrow(0, 0, s.prev_rows), d_gh.narrow(0, s.offset, s.prev_rows), w_hh);
      }
      carried = s.prev_rows;
    }
    const auto d_gx_mm = mm.cast(d_gx);
    const auto d_x = mm.result(d_gx_mm.mm(w_ih));
    const auto d_wih = mm.result(d_gx_mm.t().mm(x));
    const auto d_whh = mm.result(mm.cast(d_gh).t().mm(previous_states(out_mm, steps)));
    return {d_x, at::Tensor(), d_wih, d_whh, d_gx.sum(0), d_gh.sum(0), at::Tensor()};
  }
};

}  // namespace

namespace detail {

bool fused_rnn_supported(const at::Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
}

at::Tensor packed_lstm_direction(const at::Tensor& x, const at::Tensor& batch_sizes,
                                 const at::Tensor& w_ih, const at::Tensor& w_hh,
                                 const at::Tensor& b_ih, const at::Tensor& b_hh, bool reverse) {
  return LstmDirection::apply(x, batch_sizes, w_ih, w_hh, b_ih, b_hh, reverse);
}

at::Tensor packed_gru_direction(const at::Tensor& x, const at::Tensor& batch_sizes,
                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const at::Tensor& b_ih, const at::Tensor& b_hh, bool reverse) {
  return GruDirection::apply(x, batch_sizes, w_ih, w_hh, b_ih, b_hh, reverse);
}

}  // namespace detail
}  // namespace mmintent
