#pragma once
/// Adversarial training (`train.adversarial`): besides each batch's clean loss, the loss of the
/// same batch under a small worst-case perturbation of its inputs, found from the loss's
/// gradient with respect to them.
/// - FGM (Miyato et al. 2017): r = epsilon * g / ||g||_2, g the gradient of the loss with
///   respect to a sample's input, the norm taken per sample over that input's whole block
///   (text: its [T,D] token embeddings, padding positions excluded; image: its normalised
///   pixels [C,H,W]); one perturbation per modality, each in its own ball.
/// - PGD (Madry et al. 2018, in L2): from r_0 = 0, `steps` steps r_k = P(r_{k-1} + alpha *
///   g_{k-1} / ||g_{k-1}||), g_{k-1} the gradient at r_{k-1} and P the projection back onto the
///   per-sample L2 ball of radius epsilon; the loss is then taken at r_steps. With steps 1 and
///   alpha = epsilon it is FGM. No random start: nothing random is drawn.
///
/// Text is perturbed in its embeddings (the text encoder's embedding output, through
/// models/detail/embedding_delta.h's scope), images in their normalised pixels. The gradient
/// with respect to the clean input comes from the clean backward pass itself: the clean
/// forward adds a zero perturbation that requires grad.

#include "mmintent/core/batch.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace mmintent {

class IntentClassifierImpl;

/// Example: `AdversarialOptions o; o.method = "fgm"; o.epsilon = 1.0; o.modalities = {"text"};`
struct AdversarialOptions {
  std::string method = "none";  ///< none | fgm | pgd
  double epsilon = 1.0;         ///< > 0: the L2 radius of each sample's perturbation, per modality
  int64_t steps = 3;            ///< pgd: >= 1 gradient steps
  double alpha = 0.3;           ///< pgd: > 0, the L2 length of each step
  /// The inputs perturbed: "text" and/or "image"; empty: those of the two the model uses.
  std::vector<std::string> modalities;
  /// >= 0: the step's loss is clean loss + weight x adversarial loss.
  double weight = 1.0;

  bool enabled() const { return method != "none"; }
};

/// Perturbations of a batch's inputs, by modality: "text" [B,T,D] added to the token
/// embeddings (D the text encoder's embedding_dim), "image" [B,C,H,W] added to the pixels.
using Perturbation = std::map<std::string, at::Tensor>;

/// The model's logits for `batch` with `perturbation` added to its inputs (none: plain forward).
at::Tensor forward_perturbed(IntentClassifierImpl& model, const Batch& batch,
                             const Perturbation& perturbation);

namespace adversarial {
/// `g` restricted to `valid` (broadcast to g's shape, 1 = counted) and scaled to L2 norm 1 per
/// sample (over everything but dim 0), as float; a sample whose restricted gradient is 0 gets 0.
at::Tensor unit_direction(const at::Tensor& g, const at::Tensor& valid);
/// `delta` with each sample (dim 0) scaled back onto the L2 ball of radius `epsilon` when outside.
at::Tensor project_to_ball(const at::Tensor& delta, double epsilon);
/// Each sample's L2 norm [B] over everything but dim 0.
at::Tensor sample_norms(const at::Tensor& x);
}  // namespace adversarial

/// FGM / PGD for one model. Constructed by the trainer for method fgm or pgd.
class AdversarialAttack {
 public:
  /// A scalar loss of the batch's logits under a perturbation (a forward pass).
  using LossOf = std::function<at::Tensor(const Perturbation&)>;

  /// Throws Error naming the key (train.adversarial.method, .epsilon, .steps, .alpha, .weight,
  /// .modalities) when the options are invalid, or name a modality `model` does not use or
  /// cannot perturb; an ensemble cannot be trained.
  AdversarialAttack(AdversarialOptions options, const IntentClassifierImpl& model);

  const AdversarialOptions& options() const { return options_; }
  /// The modalities perturbed, resolved (never empty).
  const std::vector<std::string>& modalities() const { return modalities_; }

  /// Zero perturbations requiring grad, on the batch's device, for the perturbed modalities the
  /// batch carries: add them in the clean forward pass (forward_perturbed) and its backward
  /// pass leaves the gradient with respect to each input in their grad().
  Perturbation zeros(const Batch& batch) const;
  /// Where a perturbation may be non-zero, per modality, broadcastable to it: text [B,T,1],
  /// 1 at t < length; image [B,1,1,1], the image mask.
  Perturbation valid_positions(const Batch& batch) const;
  /// The adversarial perturbation (not requiring grad), from `clean` = zeros() after the clean
  /// backward pass. PGD calls `loss_of` steps - 1 times for the gradients at its intermediate
  /// points (torch::autograd::grad: the parameters' grads are untouched).
  Perturbation attack(const Batch& batch, const Perturbation& clean, const LossOf& loss_of) const;

 private:
  AdversarialOptions options_;
  std::vector<std::string> modalities_;
  int64_t embedding_dim_ = 0;
};

}  // namespace mmintent
