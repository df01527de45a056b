#include "mmintent/distributed/communicator.h"

#include "mmintent/error.h"

#include <torch/nn/module.h>

#include <ATen/ATen.h>

#include <cstring>
#include <map>
#include <utility>

namespace mmintent {
namespace {

/// Groups tensors by (device, dtype) in order, and each group into runs of about
/// `bucket_bytes`; returns the indices of each bucket's tensors.
std::vector<std::vector<size_t>> make_buckets(const std::vector<at::Tensor>& tensors,
                                              int64_t bucket_bytes) {
  std::map<std::pair<std::string, int>, std::vector<size_t>> groups;
  std::vector<std::pair<std::string, int>> group_order;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto key = std::make_pair(tensors[i].device().str(), static_cast<int>(tensors[i].scalar_type()));
    if (!groups.count(key)) group_order.push_back(key);
    groups[key].push_back(i);
  }
  std::vector<std::vector<size_t>> buckets;
  for (const auto& key : group_order) {
    std::vector<size_t> current;
    int64_t bytes = 0;
    for (size_t i : groups[key]) {
      const int64_t b = tensors[i].numel() * static_cast<int64_t>(tensors[i].element_size());
      if (!current.empty() && bytes + b > bucket_bytes) {
        buckets.push_back(std::move(current));
        current.clear();
        bytes = 0;
      }
      current.push_back(i);
      bytes += b;
    }
    if (!current.empty()) buckets.push_back(std::move(current));
  }
  return buckets;
}

at::Tensor flatten(const std::vector<at::Tensor>& tensors, const std::vector<size_t>& members) {
  std::vector<at::Tensor> flat;
  flat.reserve(members.size());
  for (size_t i : members) flat.push_back(tensors[i].reshape({-1}));
  return at::cat(flat);
}

void unflatten_into(const at::Tensor& flat, std::vector<at::Tensor>& tensors,
                    const std::vector<size_t>& members) {
  int64_t offset = 0;
  for (size_t i : members) {
    const int64_t n = tensors[i].numel();
    tensors[i].copy_(flat.narrow(0, offset, n).view(tensors[i].sizes()));
    offset += n;
  }
}

std::vector<at::Tensor> module_state(torch::nn::Module& module) {
  std::vector<at::Tensor> out;
  for (auto& p : module.parameters()) out.push_back(p);
  for (auto& b : module.buffers()) out.push_back(b);
  return out;
}

}  // namespace

std::vector<double> all_reduce_sum(Communicator& comm, const std::vector<double>& values) {
  if (values.empty()) return {};
  auto t = at::tensor(values, at::kDouble);
  comm.all_reduce_sum(t);
  const auto* p = t.data_ptr<double>();
  return std::vector<double>(p, p + t.numel());
}

std::vector<double> broadcast(Communicator& comm, const std::vector<double>& values, int root) {
  if (values.empty()) return {};
  auto t = at::tensor(values, at::kDouble);
  comm.broadcast(t, root);
  const auto* p = t.data_ptr<double>();
  return std::vector<double>(p, p + t.numel());
}

std::string broadcast_bytes(Communicator& comm, const std::string& data, int root) {
  const auto size = broadcast(comm, std::vector<double>{static_cast<double>(data.size())}, root);
  const auto n = static_cast<int64_t>(size.at(0));
  at::Tensor bytes = at::empty({n}, at::kByte);
  if (comm.rank() == root && n > 0) std::memcpy(bytes.data_ptr<uint8_t>(), data.data(), data.size());
  if (n > 0) comm.broadcast(bytes, root);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(n));
}

void broadcast_module(Communicator& comm, torch::nn::Module& module, int root, int64_t bucket_bytes) {
  at::NoGradGuard no_grad;
  auto tensors = module_state(module);
  for (const auto& members : make_buckets(tensors, bucket_bytes)) {
    auto flat = flatten(tensors, members);
    comm.broadcast(flat, root);
    unflatten_into(flat, tensors, members);
  }
}

void average_buffers(Communicator& comm, torch::nn::Module& module) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> floating;
  for (auto& b : module.buffers()) {
    if (at::isFloatingType(b.scalar_type())) floating.push_back(b);
  }
  if (floating.empty()) return;
  for (const auto& members : make_buckets(floating, int64_t{1} << 62)) {
    auto flat = flatten(floating, members);
    comm.all_reduce_sum(flat);
    flat.div_(comm.world_size());
    unflatten_into(flat, floating, members);
  }
}

GradientReducer::GradientReducer(Communicator& comm, std::vector<at::Tensor> parameters,
                                 int64_t bucket_bytes)
    : comm_(comm), parameters_(std::move(parameters)) {
  if (bucket_bytes < 1) throw Error("distributed.bucket_mb must be > 0");
  std::vector<at::Tensor> trainable;
  std::vector<size_t> index;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (parameters_[i].requires_grad()) {
      trainable.push_back(parameters_[i]);
      index.push_back(i);
    }
  }
  for (auto& members : make_buckets(trainable, bucket_bytes)) {
    Bucket bucket;
    for (size_t m : members) {
      bucket.members.push_back(index[m]);
      bucket.numel += parameters_[index[m]].numel();
    }
    buckets_.push_back(std::move(bucket));
  }
}

std::vector<double> GradientReducer::reduce(const std::vector<double>& extra) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads(parameters_.size());
  for (size_t i = 0; i < parameters_.size(); ++i) {
    auto& p = parameters_[i];
    if (!p.requires_grad()) continue;
    // A parameter this rank did not use still takes part: its gradient is zero.
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    grads[i] = p.grad();
  }
  std::vector<double> summed_extra;
  for (size_t k = 0; k < buckets_.size(); ++k) {
    const auto& bucket = buckets_[k];
    auto flat = flatten(grads, bucket.members);
    const bool last = k + 1 == buckets_.size();
    if (last && !extra.empty()) {
      flat = at::cat({flat, at::tensor(extra, at::kDouble).to(flat.options())});
    }
    comm_.all_reduce_sum(flat);
    if (last && !extra.empty()) {
      auto tail = flat.narrow(0, bucket.numel, static_cast<int64_t>(extra.size())).to(at::kCPU, at::kDouble);
      summed_extra.assign(tail.data_ptr<double>(), tail.data_ptr<double>() + tail.numel());
    }
    unflatten_into(flat, grads, bucket.members);
  }
  if (buckets_.empty() && !extra.empty()) summed_extra = all_reduce_sum(comm_, extra);
  return summed_extra;
}

}  // namespace mmintent
