#pragma once
/// Knowledge distillation's data side (train.distill; loss.h has the loss): a teacher's
/// probabilities computed once per training sample, without augmentation, and handed to the
/// trainer with each batch.

#include "mmintent/core/batch.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/precision.h"

namespace mmintent {

/// The teacher's probabilities softmax(logits / temperature) [num_samples, K] (float, CPU),
/// row i for sample index i of `source` (its batches' Batch::indices), from one pass in eval
/// mode. An ensemble teacher's logits are the log of its mean probabilities. Throws Error when
/// the source's indices fall outside [0, num_samples) or some sample is never seen.
at::Tensor teacher_probabilities(IntentClassifier& teacher, BatchSource& source, const c10::Device& device,
                                 Precision precision, int64_t num_samples, double temperature);

/// A training source whose batches carry the teacher's rows (Batch::teacher = probs[indices]);
/// everything else is `inner`'s, which it does not own.
class TeacherSource : public BatchSource {
 public:
  TeacherSource(BatchSource& inner, at::Tensor probs);
  void start_epoch(int64_t epoch) override { inner_.start_epoch(epoch); }
  std::optional<Batch> next() override;
  int64_t num_batches() const override { return inner_.num_batches(); }
  int64_t num_samples() const override { return inner_.num_samples(); }
  int64_t batch_size_at(int64_t i) const override { return inner_.batch_size_at(i); }
  int64_t global_batch_size_at(int64_t i) const override { return inner_.global_batch_size_at(i); }

 private:
  BatchSource& inner_;
  at::Tensor probs_;
};

}  // namespace mmintent
