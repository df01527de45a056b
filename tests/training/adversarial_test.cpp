// Adversarial training (training/adversarial.h): FGM's and PGD's perturbations on hand-made
// losses whose gradients are known, the text encoder's embedding delta, and the trainer's
// clean + weight x adversarial gradient, determinism and exact resume.

#include "mmintent/error.h"
#include "mmintent/models/detail/embedding_delta.h"
#include "mmintent/training/adversarial.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/loss.h"
#include "mmintent/training/trainer.h"
#include "mmintent/run/run_directory.h"
#include "support/support.h"
#include "support/synthetic.h"

#include <gmock/gmock.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

using namespace mmintent;
using ::testing::HasSubstr;

namespace {

class AdversarialTest : public test::SeededTest {
 protected:
  static IntentClassifierOptions model_options(int64_t embedding_dim = 3, bool image = true) {
    IntentClassifierOptions o;
    o.num_classes(8).modalities(image ? std::vector<std::string>{"text", "image"}
                                      : std::vector<std::string>{"text"});
    o.text(TextEncoderOptions().vocab_size(30).embedding_dim(embedding_dim).hidden_size(6).dropout(0.0));
    o.image(ImageEncoderOptions().channels({4}).out_dim(6).batch_norm(false).dropout(0.0));
    o.head(HeadOptions().hidden({8}).dropout(0.0));
    return o;
  }
  static AdversarialOptions fgm(double epsilon) {
    AdversarialOptions a;
    a.method = "fgm";
    a.epsilon = epsilon;
    return a;
  }
  /// A batch of text (lengths `lengths`, T their maximum) and 1x8x8 images with `image_mask`.
  static Batch batch_of(const std::vector<int64_t>& lengths, const std::vector<float>& image_mask) {
    const auto B = static_cast<int64_t>(lengths.size());
    int64_t T = 1;
    for (auto l : lengths) T = std::max(T, l);
    Batch b;
    b.inputs["text"].data = torch::randint(1, 30, {B, T}, torch::kLong);
    b.inputs["text"].lengths = torch::tensor(lengths, torch::kLong);
    b.inputs["text"].mask = (b.inputs["text"].lengths > 0).to(torch::kFloat);
    b.inputs["image"].data = torch::randn({B, 1, 8, 8});
    b.inputs["image"].mask = torch::tensor(image_mask, torch::kFloat);
    b.labels = torch::arange(B, torch::kLong) % 8;
    b.indices = torch::arange(B, torch::kLong);
    return b;
  }
  static double cosine(const at::Tensor& a, const at::Tensor& b) {
    return (a * b).sum().item<double>() / (a.norm().item<double>() * b.norm().item<double>());
  }
};

TEST_F(AdversarialTest, FgmIsEpsilonTimesTheUnitGradientPerSampleWithoutPadding) {
  IntentClassifier model(model_options());
  AdversarialAttack attack(fgm(0.7), *model);
  EXPECT_EQ(attack.modalities(), (std::vector<std::string>{"text", "image"}));
  const auto b = batch_of({4, 2, 0}, {1, 0, 1});  // sample 1 lacks its image, sample 2 its text
  auto clean = attack.zeros(b);
  ASSERT_EQ(clean.at("text").sizes(), (std::vector<int64_t>{3, 4, 3}));
  ASSERT_EQ(clean.at("image").sizes(), (std::vector<int64_t>{3, 1, 8, 8}));
  // A hand-made loss, linear in the perturbation: its gradient is W (padding included).
  const auto w_text = torch::randn({3, 4, 3}), w_image = torch::randn({3, 1, 8, 8});
  const auto loss_of = [&](const Perturbation& p) {
    return (p.at("text") * w_text).sum() + (p.at("image") * w_image).sum();
  };
  loss_of(clean).backward();
  const auto r = attack.attack(b, clean, [](const Perturbation&) -> at::Tensor {
    ADD_FAILURE() << "FGM needs no further gradient";
    return {};
  });
  ASSERT_FALSE(r.at("text").requires_grad());
  // Text: samples 0 and 1 along their own unpadded gradient block, norm epsilon; padding and
  // the sample without text get 0.
  for (int64_t s = 0; s < 2; ++s) {
    const int64_t len = s == 0 ? 4 : 2;
    const auto g = w_text[s].slice(0, 0, len);
    const auto rs = r.at("text")[s];
    EXPECT_NEAR(rs.norm().item<double>(), 0.7, 1e-5) << s;
    EXPECT_NEAR(cosine(rs.slice(0, 0, len), g), 1.0, 1e-5) << s;
    EXPECT_TRUE(torch::allclose(rs.slice(0, 0, len), 0.7 * g / g.norm(), 1e-5, 1e-6)) << s;
    if (len < 4) {
      EXPECT_EQ(rs.slice(0, len, 4).abs().sum().item<double>(), 0.0);
    }
  }
  EXPECT_EQ(r.at("text")[2].abs().sum().item<double>(), 0.0);
  // Image: per sample, samples without an image get 0.
  for (int64_t s : {0, 2}) {
    EXPECT_NEAR(r.at("image")[s].norm().item<double>(), 0.7, 1e-5);
    EXPECT_NEAR(cosine(r.at("image")[s], w_image[s]), 1.0, 1e-5);
  }
  EXPECT_EQ(r.at("image")[1].abs().sum().item<double>(), 0.0);
}

TEST_F(AdversarialTest, HelpersNormaliseAndProjectPerSample) {
  const auto g = torch::tensor({3.0f, 4.0f, 0.0f, 0.0f, 0.0f, 0.0f}).view({2, 3});
  const auto unit = adversarial::unit_direction(g, torch::ones({2, 1}));
  EXPECT_TRUE(torch::allclose(unit, torch::tensor({0.6f, 0.8f, 0.f, 0.f, 0.f, 0.f}).view({2, 3})));
  // The second column excluded.
  const auto masked = adversarial::unit_direction(g, torch::tensor({1.f, 0.f, 1.f}).view({1, 3}));
  EXPECT_TRUE(torch::allclose(masked, torch::tensor({1.f, 0.f, 0.f, 0.f, 0.f, 0.f}).view({2, 3})));
  const auto d = torch::tensor({3.0f, 4.0f, 0.3f, 0.4f}).view({2, 2});
  const auto p = adversarial::project_to_ball(d, 1.0);
  EXPECT_TRUE(torch::allclose(p, torch::tensor({0.6f, 0.8f, 0.3f, 0.4f}).view({2, 2})));
  EXPECT_TRUE(torch::allclose(adversarial::sample_norms(p), torch::tensor({1.0f, 0.5f})));
}

TEST_F(AdversarialTest, PgdStaysInTheBallAndBeatsFgmOnACurvedLoss) {
  // One sample, one token, 2-d embeddings: f(p) = p1 + (p1 + p2)^2 / 2. At 0 the gradient is
  // (1, 0), so FGM takes p = (eps, 0): f = 1.5 for eps 1. On the unit circle f's maximum is
  // at 30 degrees (f = 1.799), which projected gradient ascent approaches.
  IntentClassifier model(model_options(/*embedding_dim=*/2, /*image=*/false));
  Batch b = batch_of({1}, {1});
  b.inputs.erase("image");
  const auto f = [](const Perturbation& p) {
    const auto x = p.at("text").view({2});
    return x[0] + (x[0] + x[1]).pow(2) / 2;
  };
  double fgm_loss = 0;
  {
    AdversarialAttack attack(fgm(1.0), *model);
    auto clean = attack.zeros(b);
    f(clean).backward();
    const auto r = attack.attack(b, clean, f);
    EXPECT_NEAR(r.at("text")[0][0][0].item<double>(), 1.0, 1e-6);
    fgm_loss = f(r).item<double>();
    EXPECT_NEAR(fgm_loss, 1.5, 1e-5);
  }
  AdversarialOptions o;
  o.method = "pgd";
  o.epsilon = 1.0;
  o.alpha = 0.5;
  o.steps = 10;
  AdversarialAttack attack(o, *model);
  auto clean = attack.zeros(b);
  f(clean).backward();
  int calls = 0;
  const auto r = attack.attack(b, clean, [&](const Perturbation& p) {
    ++calls;
    // Each intermediate point lies in the ball.
    EXPECT_LE(adversarial::sample_norms(p.at("text")).item<double>(), 1.0 + 1e-5);
    return f(p);
  });
  EXPECT_EQ(calls, 9);  // steps - 1 gradients past the clean one
  EXPECT_LE(adversarial::sample_norms(r.at("text")).item<double>(), 1.0 + 1e-5);
  const double pgd_loss = f(r).item<double>();
  EXPECT_GT(pgd_loss, fgm_loss + 0.2);
  EXPECT_GT(pgd_loss, f(attack.zeros(b)).item<double>());
  EXPECT_NEAR(pgd_loss, 1.799, 0.05);

  // PGD with one step of alpha = epsilon is FGM.
  o.steps = 1;
  o.alpha = 1.0;
  AdversarialAttack one(o, *model);
  auto clean1 = one.zeros(b);
  f(clean1).backward();
  EXPECT_NEAR(f(one.attack(b, clean1, f)).item<double>(), fgm_loss, 1e-6);
}

TEST_F(AdversarialTest, TheEmbeddingDeltaReachesTheTextEncoderAndRaisesTheModelsLoss) {
  IntentClassifier model(model_options(4));
  model->eval();
  const auto b = batch_of({5, 3, 4, 2}, {1, 1, 1, 1});
  AdversarialAttack attack(fgm(0.5), *model);
  // A zero perturbation changes nothing; outside a scope the encoder adds nothing.
  auto clean = attack.zeros(b);
  const auto plain = model->forward(b);
  const auto zero = forward_perturbed(*model, b, clean);
  EXPECT_TRUE(torch::equal(plain.detach(), zero.detach()));
  EXPECT_FALSE(mmintent::detail::embedding_delta().defined());
  const auto loss = per_sample_loss(zero, b, LossOptions{}).sum();
  loss.backward();
  ASSERT_TRUE(clean.at("text").grad().defined());
  ASSERT_TRUE(clean.at("image").grad().defined());
  // Padding positions do not reach the packed RNN: no gradient there.
  EXPECT_EQ(clean.at("text").grad()[1].slice(0, 3, 5).abs().sum().item<double>(), 0.0);
  const auto r = attack.attack(b, clean, {});
  for (int64_t s = 0; s < 4; ++s) {
    EXPECT_NEAR(r.at("text")[s].norm().item<double>(), 0.5, 1e-5);
    EXPECT_NEAR(cosine(r.at("text")[s], clean.at("text").grad()[s]), 1.0, 1e-5);
  }
  const double adv = per_sample_loss(forward_perturbed(*model, b, r), b, LossOptions{}).sum().item<double>();
  EXPECT_GT(adv, loss.item<double>());
  // The text perturbation alone changes the logits.
  Perturbation text_only{{"text", r.at("text")}};
  EXPECT_FALSE(torch::allclose(forward_perturbed(*model, b, text_only), plain));
}

TEST_F(AdversarialTest, BadOptionsAreErrorsNamingTheKey) {
  IntentClassifier text_only(model_options(3, /*image=*/false));
  const auto expect_error = [&](AdversarialOptions o, const std::string& key) {
    try {
      AdversarialAttack attack(o, *text_only);
      ADD_FAILURE() << key << " accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("train.adversarial." + key));
    }
  };
  auto o = fgm(1.0);
  o.method = "fsgm";
  expect_error(o, "method");
  expect_error(fgm(0.0), "epsilon");
  o = fgm(1.0);
  o.method = "pgd";
  o.steps = 0;
  expect_error(o, "steps");
  o.steps = 2;
  o.alpha = 0;
  expect_error(o, "alpha");
  o = fgm(1.0);
  o.modalities = {"image"};
  expect_error(o, "modalities");
  o.modalities = {"audio"};
  expect_error(o, "modalities");
  // Empty: the modalities the model uses.
  EXPECT_EQ(AdversarialAttack(fgm(1.0), *text_only).modalities(), (std::vector<std::string>{"text"}));
}

class AdversarialTrainerTest : public AdversarialTest {
 protected:
  static TrainerOptions options(const AdversarialOptions& adversarial) {
    TrainerOptions t;
    t.epochs = 1;
    t.device = "cpu";
    t.progress = "none";
    t.optimizer.type = "sgd";
    t.optimizer.lr = 1.0;
    t.optimizer.momentum = 0;
    t.optimizer.weight_decay = 0;
    t.early_stopping.enabled = false;
    t.early_stopping.restore_best = false;
    t.log_every_steps = 0;
    t.adversarial = adversarial;
    return t;
  }
  /// The parameter gradient of one SGD step with lr 1: the weights before minus after.
  static std::vector<at::Tensor> trained_gradient(const AdversarialOptions& adversarial) {
    test::SyntheticSource train(8, 8, 1, false);
    torch::manual_seed(11);
    Trainer trainer(IntentClassifier(model_options()), options(adversarial));
    std::vector<at::Tensor> before;
    for (const auto& p : trainer.model()->parameters()) before.push_back(p.detach().clone());
    trainer.fit(train, nullptr);
    std::vector<at::Tensor> out;
    const auto after = trainer.model()->parameters();
    for (size_t i = 0; i < before.size(); ++i) out.push_back(before[i] - after[i].detach());
    return out;
  }
};

TEST_F(AdversarialTrainerTest, TheStepsGradientIsCleanPlusWeightTimesAdversarial) {
  auto o = fgm(0.8);
  o.weight = 0.6;
  const auto clean_only = trained_gradient(AdversarialOptions{});
  const auto with_fgm = trained_gradient(o);

  // The same by hand: the clean gradient, the FGM perturbation from the gradient with respect
  // to the inputs, then weight x the adversarial loss's gradient.
  test::SyntheticSource train(8, 8, 1, false);
  train.start_epoch(0);
  const Batch b = *train.next();
  torch::manual_seed(11);
  IntentClassifier model(model_options());
  model->train();
  const auto params = model->parameters();
  const auto mean_loss = [&](const Perturbation& p) {
    return per_sample_loss(forward_perturbed(*model, b, p), b, LossOptions{}).sum() / 8.0;
  };
  Perturbation zero{{"text", torch::zeros({8, b.input("text").data.size(1), 3}, torch::requires_grad())},
                    {"image", torch::zeros({8, 1, 8, 8}, torch::requires_grad())}};
  std::vector<at::Tensor> inputs = params;
  inputs.push_back(zero.at("text"));
  inputs.push_back(zero.at("image"));
  const auto clean = torch::autograd::grad({mean_loss(zero)}, inputs);
  Perturbation r;
  const auto lengths = b.input("text").lengths;
  const std::vector<std::pair<std::string, size_t>> gradient_of{{"text", params.size()}, {"image", params.size() + 1}};
  for (const auto& [name, index] : gradient_of) {
    auto g = clean[index].clone();
    if (name == "text") {
      for (int64_t s = 0; s < 8; ++s) g[s].slice(0, lengths[s].item<int64_t>()).zero_();
    }
    const auto norms = g.reshape({8, -1}).norm(2, 1);
    std::vector<int64_t> shape(static_cast<size_t>(g.dim()), 1);
    shape[0] = 8;
    r[name] = 0.8 * g / norms.view(shape);
  }
  const auto adversarial = torch::autograd::grad({mean_loss(r)}, params);
  size_t differing = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::allclose(clean_only[i], clean[i], 1e-4, 1e-6)) << i;
    const auto expected = clean[i] + 0.6 * adversarial[i];
    EXPECT_TRUE(torch::allclose(with_fgm[i], expected, 1e-4, 1e-6))
        << i << ": max diff " << (with_fgm[i] - expected).abs().max().item<double>();
    differing += !torch::allclose(with_fgm[i], clean_only[i], 1e-4, 1e-6);
  }
  EXPECT_GT(differing, params.size() / 2);
}

TEST_F(AdversarialTrainerTest, RunsAreDeterministicAndResumeExactly) {
  for (const std::string method : {"fgm", "pgd"}) {
    SCOPED_TRACE(method);
    AdversarialOptions a = fgm(0.5);
    a.method = method;
    a.steps = 2;
    a.alpha = 0.3;
    IntentClassifierOptions mo = model_options();
    mo.text(mo.text().dropout(0.2));  // dropout draws in every pass: they must repeat
    mo.image(ImageEncoderOptions().channels({4}).out_dim(6));  // batch norm and dropout
    test::TempDir dir;
    const auto train_options = [&](const std::string& run, int64_t epochs) {
      auto t = options(a);
      t.epochs = epochs;
      t.optimizer.type = "adamw";
      t.optimizer.lr = 0.01;
      t.accumulation_steps = 2;
      t.grad_clip = 1.0;
      if (!run.empty()) t.files = RunDirectory(run).trainer_files();
      return t;
    };
    const auto run = [&](const std::string& dir_name, int64_t epochs) {
      test::SyntheticSource train(40, 8, 1, true);
      torch::manual_seed(5);
      Trainer t(IntentClassifier(mo), train_options(dir_name, epochs));
      const auto fit = t.fit(train, nullptr);
      return std::make_pair(copy_state(*t.model()), fit.history.back().metrics);
    };
    const auto [w1, m1] = run("", 3);
    const auto [w2, m2] = run("", 3);
    ASSERT_EQ(w1.size(), w2.size());
    for (size_t i = 0; i < w1.size(); ++i) EXPECT_TRUE(w1[i].second.equal(w2[i].second)) << w1[i].first;
    EXPECT_EQ(m1, m2);

    // Interrupted after epoch 2, resumed: the uninterrupted weights.
    const auto cut = (dir.path() / "cut").string();
    {
      test::SyntheticSource train(40, 8, 1, true);
      torch::manual_seed(5);
      Trainer first(IntentClassifier(mo), train_options(cut, 3));
      first.on_epoch_end = [](const EpochRecord& r) {
        if (r.epoch == 2) throw std::runtime_error("simulated crash");
      };
      EXPECT_THROW(first.fit(train, nullptr), std::runtime_error);
    }
    test::SyntheticSource train(40, 8, 1, true);
    torch::manual_seed(77);
    Trainer second(IntentClassifier(mo), train_options(cut, 3));
    second.resume(cut + "/last.pt");
    second.fit(train, nullptr);
    const auto w3 = copy_state(*second.model());
    for (size_t i = 0; i < w1.size(); ++i) EXPECT_TRUE(w1[i].second.equal(w3[i].second)) << w1[i].first;
  }
}

TEST_F(AdversarialTrainerTest, Bf16AutocastWithAccumulationAndClippingTrainsDeterministically) {
  // The forward passes (clean, PGD's, adversarial) under bf16 autocast, the losses and the
  // perturbations in fp32.
  const auto train = [&](const std::string& method) {
    AdversarialOptions a = fgm(0.5);
    a.method = method;
    a.steps = 2;
    auto t = options(a);
    t.precision = "bf16";
    t.epochs = 2;
    t.optimizer.type = "adamw";
    t.optimizer.lr = 0.01;
    t.accumulation_steps = 3;  // 5 batches: windows of 3 and 2
    t.grad_clip = 0.5;
    test::SyntheticSource source(40, 8, 1, true);
    torch::manual_seed(5);
    Trainer trainer(IntentClassifier(model_options()), t);
    const auto fit = trainer.fit(source, nullptr);
    return std::make_pair(copy_state(*trainer.model()), fit.history.back().metrics.at("train.loss"));
  };
  const auto [none_w, none_loss] = train("none");
  for (const std::string method : {"fgm", "pgd"}) {
    SCOPED_TRACE(method);
    const auto [w1, loss1] = train(method);
    const auto [w2, loss2] = train(method);
    EXPECT_TRUE(std::isfinite(loss1));
    EXPECT_EQ(loss1, loss2);
    bool differs = false;
    for (size_t i = 0; i < w1.size(); ++i) {
      EXPECT_TRUE(w1[i].second.equal(w2[i].second)) << w1[i].first;
      EXPECT_TRUE(torch::isfinite(w1[i].second).all().item<bool>()) << w1[i].first;
      differs = differs || !w1[i].second.equal(none_w[i].second);
    }
    EXPECT_TRUE(differs);
  }
}

TEST_F(AdversarialTrainerTest, BatchNormStatisticsAreThoseOfTheCleanPasses) {
  IntentClassifierOptions mo = model_options();
  mo.image(ImageEncoderOptions().channels({4}).out_dim(6).dropout(0.0));  // batch norm
  const auto buffers_after = [&](const AdversarialOptions& a) {
    // One batch: its statistics are taken with the initial weights, with or without FGM.
    test::SyntheticSource train(8, 8, 1, false);
    torch::manual_seed(5);
    auto t = options(a);
    Trainer trainer(IntentClassifier(mo), t);
    trainer.fit(train, nullptr);
    std::vector<at::Tensor> out;
    for (const auto& buffer : trainer.model()->buffers()) out.push_back(buffer.clone());
    return out;
  };
  const auto plain = buffers_after(AdversarialOptions{});
  const auto adv = buffers_after(fgm(2.0));
  ASSERT_EQ(plain.size(), adv.size());
  ASSERT_FALSE(plain.empty());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(plain[i].equal(adv[i])) << i;
}

}  // namespace
