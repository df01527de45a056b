#include "mmintent/core/batch.h"

#include <ATen/ATen.h>

namespace mmintent {
namespace {
at::Tensor move(const at::Tensor& t, const c10::Device& device, bool non_blocking) {
  return t.defined() ? t.to(device, non_blocking) : t;
}
}  // namespace

Batch Batch::to(const c10::Device& device, bool non_blocking) const {
  Batch b;
  b.token_ids = move(token_ids, device, non_blocking);
  b.lengths = lengths;  // lengths stay on the CPU: pack_padded_sequence wants them there.
  b.text_mask = move(text_mask, device, non_blocking);
  b.images = move(images, device, non_blocking);
  b.image_mask = move(image_mask, device, non_blocking);
  b.labels = move(labels, device, non_blocking);
  b.indices = indices;
  return b;
}

}  // namespace mmintent
