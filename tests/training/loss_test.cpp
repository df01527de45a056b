// The training loss: hard cross-entropy (smoothing, class weights), soft targets, the
// unlikelihood term of rejected intents, and batches that mix them.

#include "mmintent/error.h"
#include "mmintent/models/intent_classifier.h"
#include "mmintent/training/loss.h"
#include "mmintent/training/trainer.h"
#include "support/support.h"

#include <gmock/gmock.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

using namespace mmintent;
using ::testing::HasSubstr;

namespace {

class TargetLossTest : public test::SeededTest {};

/// log softmax of one row, by hand.
std::vector<double> log_softmax_row(const std::vector<double>& z) {
  double m = z[0];
  for (double v : z) m = std::max(m, v);
  double s = 0;
  for (double v : z) s += std::exp(v - m);
  std::vector<double> out;
  for (double v : z) out.push_back(v - m - std::log(s));
  return out;
}

Batch targets(const at::Tensor& labels, const at::Tensor& soft = {}, const at::Tensor& rejected = {}) {
  Batch b;
  b.labels = labels;
  b.soft_targets = soft;
  b.rejected = rejected;
  return b;
}

TEST_F(TargetLossTest, SoftTargetsGiveTheHandComputedCrossEntropy) {
  const std::vector<std::vector<double>> z = {{2.0, -1.0, 0.5}, {0.1, 0.2, 0.3}};
  const std::vector<std::vector<double>> q = {{0.7, 0.0, 0.3}, {0.2, 0.5, 0.3}};
  auto logits = torch::tensor({2.0, -1.0, 0.5, 0.1, 0.2, 0.3}, torch::kFloat).view({2, 3});
  auto soft = torch::tensor({0.7, 0.0, 0.3, 0.2, 0.5, 0.3}, torch::kFloat).view({2, 3});
  auto loss = per_sample_loss(logits, targets(torch::tensor({0, 1}, torch::kLong), soft), {});
  ASSERT_EQ(loss.sizes(), (c10::IntArrayRef{2}));
  for (int i = 0; i < 2; ++i) {
    const auto lp = log_softmax_row(z[i]);
    double expected = 0;
    for (int k = 0; k < 3; ++k) expected -= q[i][k] * lp[k];
    EXPECT_NEAR(loss[i].item<double>(), expected, 1e-5) << "row " << i;
  }
}

TEST_F(TargetLossTest, OneHotSoftTargetsEqualHardCrossEntropy) {
  auto logits = torch::randn({6, 5});
  auto labels = torch::tensor({0, 4, 2, 2, 1, 3}, torch::kLong);
  auto one_hot = torch::one_hot(labels, 5).to(torch::kFloat);
  for (const bool weighted : {false, true}) {
    LossOptions o;
    if (weighted) o.class_weights = {1.0, 2.0, 0.5, 3.0, 1.5};
    auto hard = per_sample_loss(logits, labels, o);
    auto soft = per_sample_loss(logits, targets(labels, one_hot), o);
    EXPECT_TRUE(torch::allclose(hard, soft, 1e-5, 1e-6)) << "weighted " << weighted << "\n"
                                                         << hard << "\n" << soft;
  }
}

TEST_F(TargetLossTest, MixedBatchSmoothsOnlyHardRowsAndWeighsSoftRowsByExpectedWeight) {
  auto logits = torch::randn({4, 3});
  auto labels = torch::tensor({1, 0, 2, 2}, torch::kLong);
  // Rows 0 and 2 hard (zero rows), row 1 a one-hot soft target, row 3 a real distribution.
  auto soft = torch::zeros({4, 3});
  soft[1][0] = 1.0;
  soft[3][0] = 0.25;
  soft[3][2] = 0.75;
  LossOptions o;
  o.label_smoothing = 0.2;
  o.class_weights = {2.0, 1.0, 4.0};
  auto mixed = per_sample_loss(logits, targets(labels, soft), o);

  auto hard = per_sample_loss(logits, labels, o);  // smoothed and weighted
  EXPECT_NEAR(mixed[0].item<double>(), hard[0].item<double>(), 1e-5);
  EXPECT_NEAR(mixed[2].item<double>(), hard[2].item<double>(), 1e-5);
  const auto lp = torch::log_softmax(logits, 1);
  // Soft rows: no smoothing; weight = sum_k q_k w_k.
  EXPECT_NEAR(mixed[1].item<double>(), -lp[1][0].item<double>() * 2.0, 1e-5);
  const double ce3 = -(0.25 * lp[3][0].item<double>() + 0.75 * lp[3][2].item<double>());
  EXPECT_NEAR(mixed[3].item<double>(), ce3 * (0.25 * 2.0 + 0.75 * 4.0), 1e-5);
  // Without smoothing, the one-hot soft row equals its hard loss.
  LossOptions plain;
  plain.class_weights = o.class_weights;
  EXPECT_NEAR(per_sample_loss(logits, targets(labels, soft), plain)[1].item<double>(),
              per_sample_loss(logits, torch::tensor({0, 0, 0, 0}, torch::kLong), plain)[1].item<double>(),
              1e-5);
}

TEST_F(TargetLossTest, HardOnlyBatchesMatchThePlainLoss) {
  auto logits = torch::randn({5, 4});
  auto labels = torch::tensor({3, 1, 0, 2, 1}, torch::kLong);
  LossOptions o;
  o.label_smoothing = 0.1;
  EXPECT_TRUE(per_sample_loss(logits, targets(labels), o).equal(per_sample_loss(logits, labels, o)));
  // An all-hard soft tensor and an all -1 rejected tensor change nothing either.
  auto same = per_sample_loss(logits, targets(labels, torch::zeros({5, 4}), torch::full({5}, -1, torch::kLong)), o);
  EXPECT_TRUE(torch::allclose(same, per_sample_loss(logits, labels, o), 1e-6, 1e-7));
}

TEST_F(TargetLossTest, RejectionAddsTheWeightedUnlikelihoodTerm) {
  const std::vector<double> z0 = {1.0, 0.5, -0.5}, z1 = {0.0, 2.0, 1.0};
  auto logits = torch::tensor({1.0, 0.5, -0.5, 0.0, 2.0, 1.0}, torch::kFloat).view({2, 3});
  // Row 0: label 2 and rejected 0. Row 1: only a rejection of class 1 (label -1).
  auto b = targets(torch::tensor({2, -1}, torch::kLong), {}, torch::tensor({0, 1}, torch::kLong));
  LossOptions o;
  o.rejection_weight = 0.5;
  auto loss = per_sample_loss(logits, b, o);
  const auto lp0 = log_softmax_row(z0), lp1 = log_softmax_row(z1);
  const double term0 = -0.5 * std::log(1 - std::exp(lp0[0]));
  const double term1 = -0.5 * std::log(1 - std::exp(lp1[1]));
  EXPECT_NEAR(loss[0].item<double>(), -lp0[2] + term0, 1e-5);
  EXPECT_NEAR(loss[1].item<double>(), term1, 1e-5);
  // Weight 0 removes the term; the label-less row then costs nothing.
  o.rejection_weight = 0;
  auto off = per_sample_loss(logits, b, o);
  EXPECT_NEAR(off[0].item<double>(), -lp0[2], 1e-5);
  EXPECT_EQ(off[1].item<double>(), 0.0);
}

TEST_F(TargetLossTest, RejectionTermIsFiniteWhenTheRejectedIntentIsCertainAndLowersItsProbability) {
  auto logits = torch::tensor({60.0, 0.0, 0.0}, torch::kFloat).view({1, 3}).requires_grad_(true);
  auto b = targets(torch::tensor({-1}, torch::kLong), {}, torch::tensor({0}, torch::kLong));
  auto loss = per_sample_loss(logits, b, {});
  // -log(1 - p0) = log(e^60 + 2) - log 2.
  EXPECT_NEAR(loss.item<double>(), 60.0 - std::log(2.0), 1e-3);
  loss.sum().backward();
  ASSERT_TRUE(torch::isfinite(logits.grad()).all().item<bool>());
  EXPECT_GT(logits.grad()[0][0].item<double>(), 0);  // a gradient step lowers the rejected logit

  // A few SGD steps on a fresh model lower p_rejected.
  auto z = torch::tensor({2.0, 1.0, 0.0}, torch::kFloat).view({1, 3}).requires_grad_(true);
  const double before = torch::softmax(z, 1)[0][0].item<double>();
  torch::optim::SGD sgd({z}, torch::optim::SGDOptions(0.5));
  for (int i = 0; i < 5; ++i) {
    sgd.zero_grad();
    per_sample_loss(z, b, {}).sum().backward();
    sgd.step();
  }
  EXPECT_LT(torch::softmax(z, 1)[0][0].item<double>(), before - 0.2);
}

TEST_F(TargetLossTest, DistillationMixesTheHandComputedKlTermIntoRowsWithATeacher) {
  const std::vector<double> z0{2.0, -1.0, 0.5}, z1{0.0, 1.0, -2.0};
  const auto logits = torch::tensor({z0[0], z0[1], z0[2], z1[0], z1[1], z1[2]}, torch::kDouble).reshape({2, 3});
  auto b = targets(torch::tensor({0, 1}, torch::kLong));
  // Row 0 has a teacher (with a zero entry), row 1 none (zeros): it keeps its plain loss.
  const std::vector<double> q{0.7, 0.0, 0.3};
  b.teacher = torch::tensor({q[0], q[1], q[2], 0.0, 0.0, 0.0}, torch::kDouble).reshape({2, 3});
  LossOptions o;
  o.distill_alpha = 0.25;
  o.distill_temperature = 2.0;
  const auto loss = per_sample_loss(logits, b, o);
  // By hand: KL(q || softmax(z / T)) = sum_k q_k (log q_k - log p_k), 0 log 0 = 0.
  std::vector<double> zt;
  for (double v : z0) zt.push_back(v / 2.0);
  const auto lp = log_softmax_row(zt);
  double kl = 0;
  for (int k = 0; k < 3; ++k) {
    if (q[k] > 0) kl += q[k] * (std::log(q[k]) - lp[k]);
  }
  const double ce0 = -log_softmax_row(z0)[0], ce1 = -log_softmax_row(z1)[1];
  EXPECT_NEAR(loss[0].item<double>(), 0.75 * ce0 + 0.25 * 4.0 * kl, 1e-9);
  EXPECT_NEAR(loss[1].item<double>(), ce1, 1e-9);
  // alpha 0: the teacher is ignored; alpha 1: the KL term alone.
  o.distill_alpha = 0;
  EXPECT_NEAR(per_sample_loss(logits, b, o)[0].item<double>(), ce0, 1e-9);
  o.distill_alpha = 1;
  EXPECT_NEAR(per_sample_loss(logits, b, o)[0].item<double>(), 4.0 * kl, 1e-9);
  // The student that matches the teacher at T has no KL term left.
  b.teacher = torch::softmax(logits / 2.0, 1);
  EXPECT_NEAR(per_sample_loss(logits, b, o).abs().max().item<double>(), 0.0, 1e-9);
  // Bad shapes and options.
  b.teacher = torch::zeros({2, 4}, torch::kDouble);
  EXPECT_THROW(per_sample_loss(logits, b, o), Error);
  o.distill_temperature = 0;
  EXPECT_THROW(per_sample_loss(logits, b, o), Error);
}

TEST_F(TargetLossTest, BadShapesAndOptionsAreErrors) {
  auto logits = torch::randn({2, 3});
  auto labels = torch::tensor({0, 1}, torch::kLong);
  try {
    per_sample_loss(logits, targets(labels, torch::zeros({2, 4})), {});
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("soft targets must be [2,3], found [2,4]"));
  }
  EXPECT_THROW(per_sample_loss(logits, targets(labels, {}, torch::tensor({0}, torch::kLong)), {}), Error);
  LossOptions o;
  o.label_smoothing = 1.0;
  EXPECT_THROW(per_sample_loss(logits, targets(labels, torch::zeros({2, 3})), o), Error);
  o = {};
  o.class_weights = {1.0, 2.0};
  EXPECT_THROW(per_sample_loss(logits, targets(labels, torch::zeros({2, 3})), o), Error);
  o = {};
  o.rejection_weight = -1;
  EXPECT_THROW(per_sample_loss(logits, targets(labels, {}, torch::tensor({0, -1}, torch::kLong)), o), Error);
}

/// A tiny in-memory source: 3 classes told apart by the first token; every other sample has a
/// soft target (its class with 0.8, the next class with 0.2), one sample only a rejection.
class SoftSource : public BatchSource {
 public:
  void start_epoch(int64_t) override { cursor_ = 0; }
  std::optional<Batch> next() override {
    if (cursor_ >= 2) return std::nullopt;
    const int64_t B = 12;
    Batch b;
    b.inputs["text"].data = torch::zeros({B, 3}, torch::kLong);
    b.inputs["text"].lengths = torch::full({B}, 3, torch::kLong);
    b.inputs["text"].mask = torch::ones({B});
    b.labels = torch::empty({B}, torch::kLong);
    b.indices = torch::arange(cursor_ * B, (cursor_ + 1) * B, torch::kLong);
    b.soft_targets = torch::zeros({B, 3});
    b.rejected = torch::full({B}, -1, torch::kLong);
    for (int64_t i = 0; i < B; ++i) {
      const int64_t k = i % 3;
      b.input("text").data[i][0] = 1 + k;
      b.input("text").data[i][1] = 4 + (i % 2);
      b.input("text").data[i][2] = 6;
      b.labels[i] = k;
      if (i % 2 == 1) {
        b.soft_targets[i][k] = 0.8;
        b.soft_targets[i][(k + 1) % 3] = 0.2;
      }
    }
    b.labels[0] = -1;  // sample 0: only "not class 1"
    b.rejected[0] = 1;
    ++cursor_;
    return b;
  }
  int64_t num_batches() const override { return 2; }
  int64_t num_samples() const override { return 24; }
  int64_t batch_size_at(int64_t) const override { return 12; }

 private:
  int64_t cursor_ = 0;
};

TEST_F(TargetLossTest, TrainerLearnsFromMixedHardSoftAndRejectedTargets) {
  IntentClassifierOptions mo;
  mo.num_classes(3).modalities({"text"});
  mo.text(TextEncoderOptions().vocab_size(8).embedding_dim(8).hidden_size(8));
  mo.head(HeadOptions().hidden({8}).dropout(0.0));
  IntentClassifier model(mo);
  TrainerOptions t;
  t.epochs = 30;
  t.device = "cpu";
  t.progress = "none";
  t.optimizer.lr = 0.03;
  t.early_stopping.enabled = false;
  t.early_stopping.restore_best = false;
  t.early_stopping.metric = "train.loss";
  Trainer trainer(model, t);
  SoftSource source;
  auto fit = trainer.fit(source, nullptr);
  // Train accuracy counts labelled samples only (23 of 24).
  EXPECT_GT(fit.history.back().metrics.at("train.accuracy"), 0.9);
  EXPECT_LT(fit.history.back().metrics.at("train.loss"), fit.history.front().metrics.at("train.loss"));
  // The soft samples' distribution is learned: class k gets most, k+1 some of the mass.
  source.start_epoch(0);
  auto b = *source.next();
  torch::NoGradGuard no_grad;
  model->eval();
  auto p = torch::softmax(model->forward(b), 1);
  EXPECT_GT(p[1][1].item<double>(), 0.5);  // sample 1 is class 1
  EXPECT_GT(p[1][2].item<double>(), p[1][0].item<double>());
}

}  // namespace

namespace {

/// Softmax of one row, by hand.
std::vector<double> softmax_row(const std::vector<double>& z) {
  std::vector<double> p;
  for (double v : log_softmax_row(z)) p.push_back(std::exp(v));
  return p;
}

/// Rows: 0 accepted (label 1 == shown 1, p0 0.8), 1 rejected (label -1, shown 2, p0 0.05),
/// 2 corrected (label 0, shown 2, p0 0.004: clipped at 100), 3 a replayed training sample
/// (label 2, nothing shown).
struct BanditBatch {
  std::vector<std::vector<double>> z = {{1.0, 0.5, -0.5}, {0.0, 2.0, 1.0}, {0.3, -0.2, 0.1}, {-1.0, 0.0, 1.5}};
  at::Tensor logits() const {
    std::vector<float> flat;
    for (const auto& row : z) flat.insert(flat.end(), row.begin(), row.end());
    return torch::tensor(flat, torch::kFloat).view({4, 3});
  }
  Batch batch() const {
    Batch b;
    b.labels = torch::tensor({1, -1, 0, 2}, torch::kLong);
    b.rejected = torch::tensor({-1, 2, -1, -1}, torch::kLong);
    b.shown = torch::tensor({1, 2, 2, -1}, torch::kLong);
    b.propensity = torch::tensor({0.8f, 0.05f, 0.004f, 0.0f});
    return b;
  }
};

}  // namespace

TEST_F(TargetLossTest, IpsObjectiveGivesTheHandComputedClippedTermsAndKeepsCorrectionsAndReplay) {
  const BanditBatch bb;
  LossOptions o;
  o.objective = LossOptions::Objective::ips;
  o.max_inverse_propensity = 100;
  o.baseline = 0.25;
  const auto loss = per_sample_loss(bb.logits(), bb.batch(), o);
  const auto p0 = softmax_row(bb.z[0]), p1 = softmax_row(bb.z[1]), p2 = softmax_row(bb.z[2]);
  // w = pi(shown) * min(1 / p0, 100); term = (baseline - reward) * w.
  const double w0 = p0[1] / 0.8, w1 = p1[2] / 0.05, w2 = p2[2] * 100;  // 1 / 0.004 = 250 -> 100
  EXPECT_NEAR(loss[0].item<double>(), (0.25 - 1) * w0, 1e-5);  // accepted: no cross-entropy
  EXPECT_NEAR(loss[1].item<double>(), 0.25 * w1, 1e-5);        // rejected: no unlikelihood term
  EXPECT_NEAR(loss[2].item<double>(), -log_softmax_row(bb.z[2])[0] + 0.25 * w2, 1e-5);  // correction
  EXPECT_NEAR(loss[3].item<double>(), -log_softmax_row(bb.z[3])[2], 1e-5);             // replay
  // Supervised ignores what was shown: the accepted row is its label's cross-entropy again.
  LossOptions s;
  const auto plain = per_sample_loss(bb.logits(), bb.batch(), s);
  EXPECT_NEAR(plain[0].item<double>(), -log_softmax_row(bb.z[0])[1], 1e-5);
  EXPECT_NEAR(plain[1].item<double>(), -std::log(1 - p1[2]), 1e-5);
}

TEST_F(TargetLossTest, SnipsObjectiveNormalisesByTheBatchsMeanWeightAndPushesRejectedIntentsDown) {
  const BanditBatch bb;
  LossOptions o;
  o.objective = LossOptions::Objective::snips;
  auto logits = bb.logits().requires_grad_(true);
  const auto loss = per_sample_loss(logits, bb.batch(), o);
  const auto p0 = softmax_row(bb.z[0]), p1 = softmax_row(bb.z[1]), p2 = softmax_row(bb.z[2]);
  const double w0 = p0[1] / 0.8, w1 = p1[2] / 0.05, w2 = p2[2] * 100;
  const double mean_w = (w0 + w1 + w2) / 3;
  EXPECT_NEAR(loss[0].item<double>(), -w0 / mean_w, 1e-4);
  EXPECT_NEAR(loss[1].item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(loss[2].item<double>(), -log_softmax_row(bb.z[2])[0], 1e-5);
  // The bandit terms' mean over the three logged rows is minus the batch's SNIPS estimate,
  // sum(r w) / sum(w) = w0 / (w0 + w1 + w2) (row 2's term is 0: its reward is 0).
  EXPECT_NEAR((loss[0] + loss[1]).item<double>() / 3, -w0 / (w0 + w1 + w2), 1e-5);
  loss.sum().backward();
  const auto g = logits.grad();
  // A gradient step raises the accepted intent and lowers the rejected one, though the
  // rejected row's own term is 0 (self-normalisation is a baseline).
  EXPECT_LT(g[0][1].item<double>(), 0);
  EXPECT_GT(g[1][2].item<double>(), 0);
}

TEST_F(TargetLossTest, OffPolicyOptionsAreChecked) {
  const BanditBatch bb;
  LossOptions o;
  o.objective = LossOptions::Objective::ips;
  o.max_inverse_propensity = 0.5;
  EXPECT_THROW(per_sample_loss(bb.logits(), bb.batch(), o), Error);
  o.max_inverse_propensity = 100;
  o.baseline = 1.5;
  EXPECT_THROW(per_sample_loss(bb.logits(), bb.batch(), o), Error);
  o.baseline = 0;
  auto b = bb.batch();
  b.propensity = at::Tensor();
  EXPECT_THROW(per_sample_loss(bb.logits(), b, o), Error);
  EXPECT_EQ(parse_objective("snips"), LossOptions::Objective::snips);
  try {
    parse_objective("reinforce");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("supervised, ips, snips"));
  }
}
