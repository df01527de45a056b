#pragma once
/// Runs a model over every batch of a source and gathers probabilities, labels and indices.

#include "mmintent/core/batch.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/precision.h"

namespace mmintent {

struct Predictions {
  at::Tensor probs;    ///< [N,K] float on the CPU
  at::Tensor logits;   ///< [N,K] float on the CPU (probs = softmax(logits))
  /// [N,D] float on the CPU: what the head's last layer reads (forward_with_features); only
  /// when collected `with_features`.
  at::Tensor features;
  at::Tensor labels;   ///< [N] int64
  at::Tensor indices;  ///< [N] int64 sample indices into the source's data set
  /// Mean cross-entropy (plain, without smoothing or weights) over the samples whose label is
  /// one of the model's classes.
  double loss = 0;
  double loss_sum = 0;       ///< the summed cross-entropy (loss = loss_sum / loss_samples)
  int64_t loss_samples = 0;  ///< samples the loss is the mean over
};

/// Evaluates in eval mode without gradients; restores the model's training flag afterwards.
/// `precision` bf16 runs the forward passes under autocast (training/precision.h).
Predictions collect_predictions(IntentClassifier& model, BatchSource& source,
                                const c10::Device& device, Precision precision = Precision::fp32,
                                int64_t epoch = 0, bool with_features = false);

}  // namespace mmintent
