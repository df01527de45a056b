#include "mmintent/error.h"
#include "mmintent/training/predictions.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/device.h"
#include "mmintent/training/interrupt.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/training/trainer.h"
#include "support/support.h"
#include "support/synthetic.h"

#include <gmock/gmock.h>
#include <torch/torch.h>

#include <cstdlib>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

using namespace mmintent;
using ::testing::HasSubstr;

namespace {

class TrainerTest : public test::SeededTest {
 protected:
  static IntentClassifierOptions model_options(bool image = true) {
    IntentClassifierOptions o;
    o.num_classes(8).modalities(image ? std::vector<std::string>{"text", "image"}
                                      : std::vector<std::string>{"text"});
    o.text(TextEncoderOptions().vocab_size(30).embedding_dim(8).hidden_size(12).dropout(0.1));
    o.image(ImageEncoderOptions().channels({4, 8}).out_dim(10));
    o.head(HeadOptions().hidden({16}).dropout(0.2));
    return o;
  }
  TrainerOptions trainer_options(const std::string& run_dir, int64_t epochs) const {
    TrainerOptions t;
    t.epochs = epochs;
    t.device = "cpu";
    // No run directory: nothing written (RunDirectory("") would write into the working directory).
    if (!run_dir.empty()) t.files = RunDirectory(run_dir).trainer_files();
    t.progress = "none";
    t.optimizer.lr = 0.01;
    t.scheduler.type = "cosine";
    t.scheduler.warmup_steps = 3;
    t.grad_clip = 1.0;
    t.early_stopping.metric = "val.loss";
    t.early_stopping.patience = 100;
    t.log_every_steps = 4;
    return t;
  }
  static bool same_weights(const StateDict& a, const StateDict& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i].first != b[i].first || !a[i].second.equal(b[i].second)) return false;
    }
    return true;
  }
  test::TempDir dir_;
};

TEST_F(TrainerTest, LearnsTheSyntheticTask) {
  test::SyntheticSource train(512, 32, 1, true), val(64, 64, 2, false);
  IntentClassifier model(model_options());
  auto options = trainer_options(dir_.str(), 8);
  options.optimizer.lr = 0.02;
  Trainer trainer(model, options);
  auto result = trainer.fit(train, &val);
  EXPECT_EQ(result.epochs_completed, 8);
  // Chance is 1/8; one modality alone gives at most 1/2 (see SyntheticSource).
  EXPECT_GT(trainer.evaluate(val, "val").at("val.accuracy"), 0.75);
  EXPECT_LT(result.history.back().metrics.at("val.loss"),
            0.5 * result.history.front().metrics.at("val.loss"));
  for (const char* f : {"best.pt", "last.pt", "model.pt", "metrics.jsonl"}) {
    EXPECT_TRUE(std::filesystem::exists(dir_.path() / f)) << f;
  }
  // One JSON line per epoch.
  std::ifstream in(dir_.path() / "metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(in, line);) {
    ++lines;
    EXPECT_THAT(line, HasSubstr("\"val.accuracy\""));
  }
  EXPECT_EQ(lines, 8);
}

TEST_F(TrainerTest, ResumeContinuesExactlyLikeAnUninterruptedRun) {
  test::SyntheticSource train(96, 16, 1, true), val(32, 32, 2, false);
  // Uninterrupted: 4 epochs.
  torch::manual_seed(3);
  Trainer full(IntentClassifier(model_options()), trainer_options((dir_.path() / "full").string(), 4));
  full.fit(train, &val);
  const auto expected = copy_state(*full.model());

  // Interrupted after epoch 2 (the callback runs after the checkpoints are written).
  torch::manual_seed(3);
  const auto run = (dir_.path() / "cut").string();
  {
    Trainer first(IntentClassifier(model_options()), trainer_options(run, 4));
    first.on_epoch_end = [](const EpochRecord& r) {
      if (r.epoch == 2) throw std::runtime_error("simulated crash");
    };
    EXPECT_THROW(first.fit(train, &val), std::runtime_error);
  }
  torch::manual_seed(999);  // a different RNG state and initialisation: resume must restore it
  Trainer second(IntentClassifier(model_options()), trainer_options(run, 4));
  second.resume(run + "/last.pt");
  EXPECT_EQ(second.state().epochs_completed, 2);
  auto result = second.fit(train, &val);
  EXPECT_EQ(result.epochs_completed, 4);
  EXPECT_TRUE(same_weights(copy_state(*second.model()), expected));
  // metrics.jsonl holds each epoch exactly once.
  std::ifstream in(run + "/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_EQ(lines, 4);
  // The learning curve (6 steps an epoch, a point every 4 and at each epoch's end): the resumed
  // run's points are the uninterrupted run's, byte for byte, and none is there twice.
  const auto full_steps = test::read_file((dir_.path() / "full" / "steps.jsonl").string());
  EXPECT_EQ(test::read_file(run + "/steps.jsonl"), full_steps);
  std::istringstream points(full_steps);
  std::vector<std::string> steps;
  for (std::string line; std::getline(points, line);) steps.push_back(line.substr(0, line.find(',')));
  EXPECT_EQ(steps, (std::vector<std::string>{"{\"step\": 4", "{\"step\": 6", "{\"step\": 10", "{\"step\": 12",
                                              "{\"step\": 16", "{\"step\": 18", "{\"step\": 22",
                                              "{\"step\": 24"}));
}

TEST_F(TrainerTest, StopRequestKeepsTheLastEpochAndResumesExactly) {
  test::SyntheticSource train(96, 16, 1, true), val(32, 32, 2, false);
  torch::manual_seed(3);
  Trainer full(IntentClassifier(model_options()), trainer_options((dir_.path() / "full").string(), 3));
  full.fit(train, &val);

  torch::manual_seed(3);
  const auto run = (dir_.path() / "stopped").string();
  {
    Trainer first(IntentClassifier(model_options()), trainer_options(run, 3));
    first.on_epoch_end = [](const EpochRecord& r) {
      if (r.epoch == 1) request_stop();  // as SIGINT during epoch 2 would
    };
    try {
      first.fit(train, &val);
      FAIL() << "no Interrupted";
    } catch (const Interrupted& e) {
      EXPECT_THAT(e.what(), HasSubstr("epoch 2 at batch 1/6"));
      EXPECT_THAT(e.what(), HasSubstr("resume with --resume auto"));
    }
  }
  clear_stop_request();
  Trainer second(IntentClassifier(model_options()), trainer_options(run, 3));
  second.resume(run + "/last.pt");
  EXPECT_EQ(second.state().epochs_completed, 1);
  second.fit(train, &val);
  EXPECT_TRUE(same_weights(copy_state(*second.model()), copy_state(*full.model())));
}

TEST_F(TrainerTest, AccumulationMatchesOneLargeBatchIncludingAShortLastWindow) {
  // 10 samples: batch 8 gives windows [8] [2]; batch 4 x 2 gives [4+4] [2]. Plain SGD and no
  // dropout or batch norm, so the updates must agree.
  auto options = model_options(/*image=*/false);
  options.text(options.text().dropout(0.0));
  options.head(HeadOptions().hidden({16}).dropout(0.0));
  auto run = [&](int64_t batch, int64_t accumulation) {
    torch::manual_seed(11);
    IntentClassifier model(options);
    auto t = trainer_options("", 2);
    t.optimizer.type = "sgd";
    t.optimizer.momentum = 0;
    t.optimizer.weight_decay = 0;
    t.optimizer.lr = 0.5;
    t.scheduler.type = "constant";
    t.scheduler.warmup_steps = 0;
    t.grad_clip = 0;
    t.accumulation_steps = accumulation;
    t.early_stopping.metric = "train.loss";
    Trainer trainer(model, t);
    test::SyntheticSource train(10, batch, 4, false);
    trainer.fit(train, nullptr);
    return copy_state(*trainer.model());
  };
  const auto big = run(8, 1), accumulated = run(4, 2), naive = run(4, 1);
  for (size_t i = 0; i < big.size(); ++i) {
    EXPECT_TRUE(torch::allclose(big[i].second, accumulated[i].second, 1e-5, 1e-6)) << big[i].first;
  }
  bool differs = false;
  for (size_t i = 0; i < big.size(); ++i) differs |= !torch::allclose(big[i].second, naive[i].second, 1e-5, 1e-6);
  EXPECT_TRUE(differs) << "the comparison is too weak: no accumulation gave the same weights";
}

TEST_F(TrainerTest, EarlyStoppingStopsAndRestoresTheBestWeights) {
  test::SyntheticSource train(64, 16, 1, true), val(32, 32, 2, false);
  auto t = trainer_options(dir_.str(), 30);
  t.optimizer.lr = 0.05;
  t.early_stopping.metric = "val.accuracy";
  t.early_stopping.mode = "max";
  t.early_stopping.patience = 2;
  t.early_stopping.min_delta = 0.5;  // only the first evaluation can count as an improvement
  Trainer trainer(IntentClassifier(model_options()), t);
  auto result = trainer.fit(train, &val);
  EXPECT_EQ(result.stop_reason, "early_stopping");
  EXPECT_EQ(result.epochs_completed, 3);
  EXPECT_EQ(result.best_epoch, 1);
  IntentClassifier best(model_options());
  load_checkpoint(dir_.str() + "/best.pt", *best, nullptr, torch::kCPU, false);
  EXPECT_TRUE(same_weights(copy_state(*best), copy_state(*trainer.model())));
}

TEST_F(TrainerTest, UnknownEarlyStoppingMetricIsAClearError) {
  test::SyntheticSource train(16, 8, 1, true), val(8, 8, 2, false);
  auto t = trainer_options("", 2);
  t.early_stopping.metric = "val.bleu";
  Trainer trainer(IntentClassifier(model_options()), t);
  try {
    trainer.fit(train, &val);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("val.bleu"));
    EXPECT_THAT(e.what(), HasSubstr("val.accuracy"));
  }
}

TEST_F(TrainerTest, CheckpointRoundTripAndBadCheckpoints) {
  IntentClassifier a(model_options());
  const auto path = dir_.str() + "/ck.pt";
  TrainingState st;
  st.epochs_completed = 5;
  st.global_step = 77;
  st.early_stopping.has_best = true;
  st.early_stopping.best_value = 0.25;
  save_checkpoint(path, *a, nullptr, st, nullptr, torch::kCPU);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  IntentClassifier b(model_options());
  auto data = load_checkpoint(path, *b, nullptr, torch::kCPU, false);
  EXPECT_TRUE(same_weights(copy_state(*a), copy_state(*b)));
  EXPECT_EQ(data.state.epochs_completed, 5);
  EXPECT_EQ(data.state.global_step, 77);
  EXPECT_DOUBLE_EQ(data.state.early_stopping.best_value, 0.25);

  // Another architecture.
  auto other = model_options();
  other.text(other.text().hidden_size(7));
  IntentClassifier c(other);
  try {
    load_checkpoint(path, *c, nullptr, torch::kCPU, false);
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_THAT(e.what(), HasSubstr("ck.pt"));
    EXPECT_THAT(e.what(), HasSubstr("architecture"));
  }
  // Truncated and missing files.
  const auto bytes = test::read_file(path);
  const auto cut = dir_.write("cut.pt", bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(load_checkpoint(cut, *b, nullptr, torch::kCPU, false), CheckpointError);
  EXPECT_THROW(load_checkpoint(dir_.str() + "/none.pt", *b, nullptr, torch::kCPU, false), CheckpointError);
}

TEST_F(TrainerTest, LabelsPastTheModelsClassesAreLeftOutOfValidationMetrics) {
  // Out-of-scope samples of the threshold method carry the label num_classes: they have no
  // loss and are not part of the trained-class metrics.
  test::SyntheticSource val(32, 8, 2, false, /*classes=*/8);
  auto options = model_options();
  options.num_classes(6);  // labels 6 and 7 are "past the classes"
  Trainer trainer(IntentClassifier(options), trainer_options("", 1));
  auto metrics = trainer.evaluate(val, "val");
  EXPECT_TRUE(std::isfinite(metrics.at("val.loss")));
  EXPECT_GE(metrics.at("val.accuracy"), 0.0);
  auto p = collect_predictions(trainer.model(), val, torch::kCPU);
  EXPECT_EQ(p.labels.size(0), 32);  // every sample is still returned
  EXPECT_GT(p.labels.ge(6).sum().item<int64_t>(), 0);
}

/// One fixed batch, served once per pass.
class OneBatchSource : public BatchSource {
 public:
  explicit OneBatchSource(Batch b) : batch_(std::move(b)) {}
  void start_epoch(int64_t) override { served_ = false; }
  std::optional<Batch> next() override {
    if (served_) return std::nullopt;
    served_ = true;
    return batch_;
  }
  int64_t num_batches() const override { return 1; }
  int64_t num_samples() const override { return batch_.size(); }
  int64_t batch_size_at(int64_t) const override { return batch_.size(); }

 private:
  Batch batch_;
  bool served_ = false;
};

TEST_F(TrainerTest, LabelLessSamplesHaveNoLossInPredictions) {
  // A rejection in a feedback log has label -1: predicted like any sample, but without a loss.
  test::SyntheticSource data(16, 16, 4, false);
  Batch b = data.all();
  b.labels = b.labels.clone();
  b.labels.narrow(0, 0, 4).fill_(-1);
  Trainer trainer(IntentClassifier(model_options()), trainer_options("", 1));
  OneBatchSource source(b);
  const auto p = collect_predictions(trainer.model(), source, torch::kCPU);
  EXPECT_EQ(p.labels.size(0), 16);
  EXPECT_EQ(p.loss_samples, 12);
  const auto logp = torch::log(p.probs.narrow(0, 4, 12));
  const double expected = -logp.gather(1, b.labels.narrow(0, 4, 12).unsqueeze(1)).mean().item<double>();
  EXPECT_NEAR(p.loss, expected, 1e-4);
}

TEST_F(TrainerTest, DeviceStrings) {
  EXPECT_EQ(resolve_device("cpu").type(), c10::kCPU);
  EXPECT_THROW(resolve_device("tpu"), Error);
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(resolve_device("auto").type(), c10::kCPU);
    EXPECT_THROW(resolve_device("cuda:0"), Error);
  } else {
    EXPECT_THROW(resolve_device("cuda:x"), Error);
    EXPECT_THROW(resolve_device("cuda:999"), Error);
  }
}

TEST_F(TrainerTest, ThreadsReachTheBlasUnlessTheUserSetIt) {
  // BLIS reads BLIS_NUM_THREADS at its first call (in this process, earlier); the variable is
  // what configure_threads can give it, and a user's own setting wins.
  const char* saved = std::getenv("BLIS_NUM_THREADS");
  const std::string before = saved ? saved : "";
  const int lib_threads = at::get_num_threads();
  unsetenv("BLIS_NUM_THREADS");
  EXPECT_EQ(configure_threads(3), 3);
  ASSERT_NE(std::getenv("BLIS_NUM_THREADS"), nullptr);
  EXPECT_STREQ(std::getenv("BLIS_NUM_THREADS"), "3");
  setenv("BLIS_NUM_THREADS", "1", 1);
  configure_threads(2);
  EXPECT_STREQ(std::getenv("BLIS_NUM_THREADS"), "1");
  if (saved) {
    setenv("BLIS_NUM_THREADS", before.c_str(), 1);
  } else {
    unsetenv("BLIS_NUM_THREADS");
  }
  at::set_num_threads(lib_threads);
}

TEST_F(TrainerTest, KeepFreedMemoryServesBatchSizedBlocksFromTheHeap) {
#if !defined(__GLIBC__) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "glibc's malloc only (a sanitizer brings its own allocator)";
#else
  EXPECT_FALSE(configure_allocator(false));
  ASSERT_TRUE(configure_allocator(true));
  // An 8 MiB block (a demo batch's activation is 6.4 MB) now comes from the heap, not from a
  // fresh mapping; one above the 32 MiB threshold still gets its own. (Run alone, without the
  // mallopt calls, the first check fails; after other tests glibc's own adaptive threshold may
  // already have risen.)
  const auto mapped = [] { return mallinfo2().hblkhd; };
  const size_t before = mapped();
  // (Written through volatile, so that the compiler cannot drop the unused allocations.)
  auto* batch = static_cast<volatile char*>(std::malloc(8u << 20));
  ASSERT_NE(batch, nullptr);
  batch[0] = 1;
  EXPECT_EQ(mapped(), before);
  auto* huge = static_cast<volatile char*>(std::malloc(64u << 20));
  ASSERT_NE(huge, nullptr);
  huge[0] = 1;
  EXPECT_GE(mapped(), before + (64u << 20));
  std::free(const_cast<char*>(huge));
  std::free(const_cast<char*>(batch));
#endif
}

}  // namespace

namespace {

/// Passes batches through, but fills the images of one batch of one epoch with `value`.
class PoisonedSource : public BatchSource {
 public:
  PoisonedSource(BatchSource& inner, int64_t epoch, int64_t batch, float value)
      : inner_(inner), epoch_(epoch), batch_(batch), value_(value) {}
  void start_epoch(int64_t epoch) override {
    epoch_now_ = epoch;
    cursor_ = 0;
    inner_.start_epoch(epoch);
  }
  std::optional<Batch> next() override {
    auto b = inner_.next();
    if (b && epoch_now_ == epoch_ && cursor_ == batch_) {
      if (before_poison) before_poison();
      b->inputs["image"].data = b->input("image").data.clone().fill_(value_);
    }
    ++cursor_;
    return b;
  }
  int64_t num_batches() const override { return inner_.num_batches(); }
  int64_t num_samples() const override { return inner_.num_samples(); }
  int64_t batch_size_at(int64_t i) const override { return inner_.batch_size_at(i); }
  std::function<void()> before_poison;

 private:
  BatchSource& inner_;
  int64_t epoch_, batch_, epoch_now_ = 0, cursor_ = 0;
  float value_;
};

}  // namespace

TEST_F(TrainerTest, NanLossStopsNamingEpochAndBatchAndKeepsTheLastGoodCheckpoint) {
  test::SyntheticSource inner(96, 16, 1, true), val(32, 32, 2, false);
  PoisonedSource train(inner, /*epoch=*/1, /*batch=*/2, std::numeric_limits<float>::quiet_NaN());
  const auto run = (dir_.path() / "nan").string();
  torch::manual_seed(3);
  Trainer trainer(IntentClassifier(model_options()), trainer_options(run, 3));
  StateDict after_epoch_1, before_bad_batch;
  trainer.on_epoch_end = [&](const EpochRecord&) { after_epoch_1 = copy_state(*trainer.model(), true); };
  train.before_poison = [&] { before_bad_batch = copy_state(*trainer.model(), true); };
  try {
    trainer.fit(train, &val);
    FAIL() << "no TrainingError";
  } catch (const TrainingError& e) {
    EXPECT_THAT(e.what(), HasSubstr("loss is NaN at epoch 2, batch 3/6 (optimizer step 9)"));
    EXPECT_THAT(e.what(), HasSubstr("checkpoints on disk are those of epoch 1"));
  }
  // The model in memory is as it was before the bad batch, batch-norm statistics included.
  ASSERT_FALSE(before_bad_batch.empty());
  EXPECT_TRUE(same_weights(copy_state(*trainer.model(), true), before_bad_batch));
  // last.pt is epoch 1's.
  Trainer reader(IntentClassifier(model_options()), trainer_options("", 3));
  reader.resume(run + "/last.pt");
  EXPECT_EQ(reader.state().epochs_completed, 1);
  EXPECT_TRUE(same_weights(copy_state(*reader.model(), true), after_epoch_1));
}

TEST_F(TrainerTest, InfiniteGradientWithFiniteLossStopsBeforeTheUpdate) {
  for (double clip : {0.0, 1.0}) {
    SCOPED_TRACE("grad_clip " + std::to_string(clip));
    test::SyntheticSource train(64, 16, 1, true);
    auto options = trainer_options("", 2);
    options.grad_clip = clip;
    options.early_stopping.metric = "train.loss";
    torch::manual_seed(3);
    Trainer trainer(IntentClassifier(model_options()), options);
    auto params = trainer.model()->parameters();
    const auto before = copy_state(*trainer.model(), true);
    // The loss stays finite; only the gradient of one weight overflows.
    params.front().register_hook(
        [](at::Tensor g) { return g * std::numeric_limits<float>::infinity(); });
    try {
      trainer.fit(train, nullptr);
      FAIL() << "no TrainingError";
    } catch (const TrainingError& e) {
      EXPECT_THAT(e.what(), HasSubstr("gradient norm is "));
      EXPECT_THAT(e.what(), HasSubstr("at epoch 1, batch 1/4 (optimizer step 1)"));
      EXPECT_THAT(e.what(), HasSubstr("no epoch yet"));
    }
    EXPECT_TRUE(same_weights(copy_state(*trainer.model(), true), before));
  }
}
