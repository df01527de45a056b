#include "mmintent/models/detail/recurrent.h"

#include "mmintent/models/detail/fused_rnn.h"
#include "mmintent/models/detail/weight_view.h"

#include <torch/torch.h>

#include <limits>
#include <vector>

namespace mmintent::detail {
namespace rnn_utils = torch::nn::utils::rnn;

RecurrentPooling::RecurrentPooling(torch::nn::Module& owner, RecurrentOptions options,
                                   const std::string& who)
    : options_(std::move(options)), who_(who) {
  const auto& o = options_;
  TORCH_CHECK(o.type == "lstm" || o.type == "gru", who, ": type must be lstm or gru, got '",
              o.type, "'");
  TORCH_CHECK(o.pooling == "last" || o.pooling == "mean" || o.pooling == "max", who,
              ": pooling must be last, mean or max, got '", o.pooling, "'");
  TORCH_CHECK(o.rnn_kernel == "auto" || o.rnn_kernel == "fused" || o.rnn_kernel == "native", who,
              ": rnn_kernel must be auto, fused or native, got '", o.rnn_kernel, "'");
  TORCH_CHECK(o.input_size > 0 && o.hidden_size > 0 && o.num_layers > 0, who,
              ": the RNN's input size, hidden_size and num_layers must be > 0");
  const double between = o.num_layers > 1 ? o.dropout : 0.0;
  if (o.type == "lstm") {
    lstm_ = owner.register_module(
        "rnn", torch::nn::LSTM(torch::nn::LSTMOptions(o.input_size, o.hidden_size)
                                   .num_layers(o.num_layers)
                                   .bidirectional(o.bidirectional)
                                   .batch_first(true)
                                   .dropout(between)));
  } else {
    gru_ = owner.register_module(
        "rnn", torch::nn::GRU(torch::nn::GRUOptions(o.input_size, o.hidden_size)
                                  .num_layers(o.num_layers)
                                  .bidirectional(o.bidirectional)
                                  .batch_first(true)
                                  .dropout(between)));
  }
}

torch::Tensor RecurrentPooling::forward(const torch::Tensor& x, const torch::Tensor& lengths,
                                        bool training) {
  TORCH_CHECK(lstm_ || gru_, who_, ": the RNN is not built");
  TORCH_CHECK(x.dim() == 3, who_, ": expected a sequence [B,T,D], got ", x.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == x.size(0), who_, ": lengths must be [B]");
  auto safe_lengths = lengths.to(torch::kCPU, torch::kLong).clamp(1, std::max<int64_t>(1, x.size(1)));
  auto packed = rnn_utils::pack_padded_sequence(x, safe_lengths, /*batch_first=*/true,
                                                /*enforce_sorted=*/false);
  const bool fused = options_.rnn_kernel == "fused" ||
                     (options_.rnn_kernel == "auto" && fused_rnn_supported(packed.data()));
  if (fused) {
    auto [data, last] = fused_rnn(packed.data(), packed.batch_sizes(), training);
    if (options_.pooling == "last") return last.index_select(0, packed.unsorted_indices());
    packed = rnn_utils::PackedSequence(data, packed.batch_sizes(), packed.sorted_indices(),
                                       packed.unsorted_indices());
    return pool(packed, safe_lengths);
  }
  torch::Tensor h_n;
  auto out = [&] {
    if (weights_viewed()) return viewed_rnn(packed, h_n, training);
    if (lstm_) {
      auto result = lstm_->forward_with_packed_input(packed);
      h_n = std::get<0>(std::get<1>(result));
      return std::get<0>(result);
    }
    auto result = gru_->forward_with_packed_input(packed);
    h_n = std::get<1>(result);
    return std::get<0>(result);
  }();

  if (options_.pooling == "last") {
    // h_n: [layers * dirs, B, H]; the last layer's directions, concatenated.
    const int64_t dirs = options_.bidirectional ? 2 : 1;
    auto last = h_n.view({options_.num_layers, dirs, h_n.size(1), h_n.size(2)})[-1];
    return dirs == 2 ? torch::cat({last[0], last[1]}, 1) : last[0];
  }
  return pool(out, safe_lengths);
}

std::pair<torch::Tensor, torch::Tensor> RecurrentPooling::fused_rnn(
    const torch::Tensor& data, const torch::Tensor& batch_sizes, bool training) {
  TORCH_CHECK(fused_rnn_supported(data), who_, ": "
              "rnn_kernel 'fused' runs on the CPU in float32 or float64 "
              "(this input: ", data.device(), ", ", data.scalar_type(),
              "); use rnn_kernel 'auto' or 'native'");
  const auto* bs = batch_sizes.data_ptr<int64_t>();
  const int64_t steps = batch_sizes.size(0), batch = steps > 0 ? bs[0] : 0;
  // Row of each (sorted) sequence's last step in the packed data.
  std::vector<int64_t> last_row(static_cast<size_t>(batch), 0);
  for (int64_t t = 0, offset = 0; t < steps; offset += bs[t], ++t) {
    for (int64_t r = 0; r < bs[t]; ++r) last_row[static_cast<size_t>(r)] = offset + r;
  }
  const bool is_lstm = static_cast<bool>(lstm_);
  const auto params = is_lstm ? lstm_->named_parameters(false) : gru_->named_parameters(false);
  const double between = options_.num_layers > 1 ? options_.dropout : 0.0;
  auto x = data;
  torch::Tensor last;
  for (int64_t layer = 0; layer < options_.num_layers; ++layer) {
    std::vector<torch::Tensor> outputs, finals;
    for (const bool reverse : {false, true}) {
      if (reverse && !options_.bidirectional) break;
      const std::string suffix =
          "_l" + std::to_string(layer) + (reverse ? "_reverse" : "");
      // As an adapter shows them (models/detail/weight_view.h), else as they are.
      const auto w_ih = viewed_weight(params["weight_ih" + suffix]);
      const auto w_hh = viewed_weight(params["weight_hh" + suffix]);
      const auto b_ih = viewed_weight(params["bias_ih" + suffix]);
      const auto b_hh = viewed_weight(params["bias_hh" + suffix]);
      auto out = is_lstm ? packed_lstm_direction(x, batch_sizes, w_ih, w_hh, b_ih, b_hh, reverse)
                         : packed_gru_direction(x, batch_sizes, w_ih, w_hh, b_ih, b_hh, reverse);
      if (options_.pooling == "last" && layer + 1 == options_.num_layers) {
        // Forward: each sequence's last step; reverse: its first (the packed rows of step 0).
        finals.push_back(reverse ? out.narrow(0, 0, batch)
                                 : out.index_select(0, torch::tensor(last_row)));
      }
      outputs.push_back(std::move(out));
    }
    x = outputs.size() == 1 ? outputs[0] : torch::cat(outputs, 1);
    if (layer + 1 < options_.num_layers && between > 0) {
      x = torch::dropout(x, between, training);
    }
    if (!finals.empty()) last = finals.size() == 1 ? finals[0] : torch::cat(finals, 1);
  }
  return {x, last};
}

torch::nn::utils::rnn::PackedSequence RecurrentPooling::viewed_rnn(
    const torch::nn::utils::rnn::PackedSequence& packed, torch::Tensor& h_n, bool training) {
  // LibTorch's own kernel (cuDNN on CUDA) through its functional form, which takes the
  // weights as arguments: the modules read their registered ones.
  const bool is_lstm = static_cast<bool>(lstm_);
  const auto params = is_lstm ? lstm_->named_parameters(false) : gru_->named_parameters(false);
  std::vector<torch::Tensor> flat;
  for (int64_t layer = 0; layer < options_.num_layers; ++layer) {
    for (const bool reverse : {false, true}) {
      if (reverse && !options_.bidirectional) break;
      const std::string suffix = "_l" + std::to_string(layer) + (reverse ? "_reverse" : "");
      for (const char* name : {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}) {
        flat.push_back(viewed_weight(params[name + suffix]));
      }
    }
  }
  const auto& data = packed.data();
  const int64_t dirs = options_.bidirectional ? 2 : 1;
  const int64_t batch = packed.batch_sizes()[0].item<int64_t>();
  const auto zeros = torch::zeros({options_.num_layers * dirs, batch, options_.hidden_size}, data.options());
  const double between = options_.num_layers > 1 ? options_.dropout : 0.0;
  torch::Tensor out;
  if (is_lstm) {
    std::tie(out, h_n, std::ignore) = torch::lstm(data, packed.batch_sizes(), {zeros, zeros}, flat, /*has_biases=*/true,
                                                  options_.num_layers, between, training, options_.bidirectional);
  } else {
    std::tie(out, h_n) = torch::gru(data, packed.batch_sizes(), zeros, flat, /*has_biases=*/true,
                                    options_.num_layers, between, training, options_.bidirectional);
  }
  // The final states come in the packed (sorted) order; the modules' forward unsorts them.
  h_n = h_n.index_select(1, packed.unsorted_indices());
  return torch::nn::utils::rnn::PackedSequence(out, packed.batch_sizes(), packed.sorted_indices(),
                                               packed.unsorted_indices());
}

torch::Tensor RecurrentPooling::pool(const torch::nn::utils::rnn::PackedSequence& out,
                                    const torch::Tensor& safe_lengths) {
  // One gather from the packed rows into [B, T, D] (original order; past a sequence's end, a
  // filler row that the pooling ignores) instead of pad_packed_sequence, whose per-step copies
  // cost more than the RNN itself in the backward pass of small encoders.
  const auto& data = out.data();  // [N, D]
  const auto& batch_sizes = out.batch_sizes();
  const auto* bs = batch_sizes.data_ptr<int64_t>();
  const auto lengths = safe_lengths.contiguous();
  const auto* len = lengths.data_ptr<int64_t>();
  const auto sorted_position = out.unsorted_indices().to(torch::kCPU).contiguous();
  const auto* pos = sorted_position.data_ptr<int64_t>();
  const int64_t batch = lengths.size(0), steps = batch_sizes.size(0), rows = data.size(0);
  std::vector<int64_t> offsets(static_cast<size_t>(steps), 0);
  for (int64_t t = 1; t < steps; ++t) offsets[t] = offsets[t - 1] + bs[t - 1];
  auto index = torch::empty({batch * steps}, torch::kLong);
  auto* idx = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < batch; ++i) {
    for (int64_t t = 0; t < steps; ++t) idx[i * steps + t] = t < len[i] ? offsets[t] + pos[i] : rows;
  }
  const bool mean = options_.pooling == "mean";
  const auto filler = mean ? torch::zeros({1, data.size(1)}, data.options())
                           : torch::full({1, data.size(1)},
                                         -std::numeric_limits<float>::infinity(), data.options());
  const auto seq = torch::cat({data, filler})
                       .index_select(0, index.to(data.device()))
                       .view({batch, steps, data.size(1)});
  if (mean) {
    return seq.sum(1) / lengths.to(data.device(), data.scalar_type()).unsqueeze(1);
  }
  return seq.amax(1);
}

}  // namespace mmintent::detail
