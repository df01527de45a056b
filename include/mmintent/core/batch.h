#pragma once
/// The batch contract between the data layer and the model/trainer. Only LibTorch's tensor type
/// is needed here, so the trainer builds without OpenCV, sentencepiece or yaml-cpp.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mmintent {

/// One modality of a collated batch.
struct ModalityInput {
  /// [B,...] the samples' values: for "text" int64 token ids [B,T] (0 = padding), for "image"
  /// normalised float pixels [B,C,H,W]; a plug-in modality defines its own. A sample lacking
  /// the modality holds zeros.
  at::Tensor data;
  /// [B] int64 on the CPU, for sequences: the real length of each row of `data` (0 when the
  /// sample lacks the modality); undefined for modalities that are not sequences.
  at::Tensor lengths;
  /// [B] float, 1 where the sample carries the modality, 0 where it lacks it.
  at::Tensor mask;
};

/// One collated batch: its modalities by name ("text", "image", "audio" and any registered plug-in,
/// see core/modality.h); a modality the model does not use is absent. A sample may lack one of
/// its batch's modalities (its mask is then 0).
///
/// Targets: every sample has `labels[i]`, a class index, or -1 when the sample has no positive
/// target (a feedback sample whose only information is a rejected intent). Two optional
/// tensors refine this; both are undefined when no sample of the batch needs them:
/// - `soft_targets` [B,K]: a probability distribution over the K classes for samples with a
///   soft label (the row sums to 1; `labels[i]` is then its most probable class, for
///   accuracy), and a row of zeros for samples whose target is the hard label `labels[i]`.
/// - `rejected` [B]: the class a person rejected for the sample, or -1 for none.
/// - `teacher` [B,K]: for distillation (train.distill), a teacher's probabilities at the
///   distillation temperature, or a row of zeros for a sample without them.
/// - `shown` [B] and `propensity` [B]: for a logged bandit sample (feedback with propensities,
///   data/feedback.h) the intent the product showed and the probability with which its policy
///   showed it, in (0, 1]; -1 and 0 for other samples. The reward is 1 when labels[i] == shown[i]
///   (the person accepted it), else 0 (rejected, or corrected to labels[i]).
struct Batch {
  std::map<std::string, ModalityInput> inputs;  ///< by modality name
  at::Tensor labels;        ///< [B] int64 class indices (-1: no positive target).
  at::Tensor indices;       ///< [B] int64 index of each sample in its data set.
  at::Tensor soft_targets;  ///< [B,K] float, see above; undefined when every target is hard.
  at::Tensor rejected;      ///< [B] int64 rejected class or -1; undefined when none is.
  at::Tensor teacher;       ///< [B,K] float teacher probabilities; undefined without distillation.
  at::Tensor shown;         ///< [B] int64 shown class or -1; undefined when no sample is logged.
  at::Tensor propensity;    ///< [B] float in (0, 1], 0 where shown is -1; defined with shown.

  int64_t size() const { return labels.defined() ? labels.size(0) : indices.size(0); }
  /// The modality `name`, or null when the batch lacks it.
  const ModalityInput* find(const std::string& name) const;
  /// The modality `name`; throws std::invalid_argument naming it when the batch lacks it.
  const ModalityInput& input(const std::string& name) const;
  /// Copies every defined tensor to `device` (non-blocking when the source is pinned).
  Batch to(const c10::Device& device, bool non_blocking = false) const;
  /// A copy in page-locked (pinned) host memory; needs a CUDA build of LibTorch.
  Batch pin_memory() const;
};

/// Concatenates batches along the sample dimension (CPU tensors). A modality with lengths (a
/// sequence) is right-padded with 0 along its second dimension to the longest part; a part lacking `soft_targets` (or `teacher`) gets zero rows, a
/// part lacking `rejected` gets -1, one lacking `shown` / `propensity` gets -1 / 0. Every part must carry the same modalities and, where
/// defined, the same per-sample shapes and class count; `indices` keep each part's own numbering.
/// Throws std::invalid_argument on mismatched parts or an empty list.
Batch concat_batches(const std::vector<Batch>& parts);

/// Rank `rank`'s part [begin, end) of global batch `b` of a data-parallel pass: the pass's
/// `samples` positions are cut into global batches of world_size x batch_size; a full one
/// gives each rank batch_size positions, a short last one of L gives rank r [L*r/W, L*(r+1)/W)
/// of it (possibly empty). With world_size 1: plain batches.
struct ShardSpan {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
ShardSpan shard_span(int64_t b, int64_t batch_size, int64_t samples, int64_t rank, int64_t world_size);

/// A source of batches for one pass over a split. The trainer asks for one epoch at a time.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// Starts pass number `epoch` (0-based). Shuffling and augmentation derive from the seed and
  /// the epoch alone, so a resumed run sees exactly the batches the uninterrupted run saw.
  virtual void start_epoch(int64_t epoch) = 0;
  /// Next batch of the pass, or nullopt at its end.
  virtual std::optional<Batch> next() = 0;
  /// Number of batches in one pass.
  virtual int64_t num_batches() const = 0;
  /// Number of samples in one pass.
  virtual int64_t num_samples() const = 0;
  /// Size of batch `i` of a pass (the last may be smaller; 0 for this rank's part of a
  /// short last batch in a sharded pass).
  virtual int64_t batch_size_at(int64_t i) const = 0;
  /// Samples of batch `i` over all the ranks of a data-parallel run (a sharded source's
  /// global batch); the same as batch_size_at for a source that is not sharded.
  virtual int64_t global_batch_size_at(int64_t i) const { return batch_size_at(i); }
};

}  // namespace mmintent
