// Data-parallel training on loopback with real c10d process groups (Gloo over a TCPStore):
// the ranks are threads of this process, each with its own process group and trainer.
// - collectives: sums, broadcasts, bucketed gradient sums with riding extras;
// - equivalence: 2 ranks x batch B step exactly as 1 rank x batch 2B (float tolerance),
//   including a last global batch that leaves one rank an empty part;
// - resume: a stopped 2-rank run resumes to the uninterrupted run's weights; a checkpoint of
//   another world size is refused;
// - failure: a rank that stops, or hangs, makes the other fail within the timeout.

#include "mmintent/core/log.h"
#include "mmintent/distributed/communicator.h"
#include "mmintent/distributed/process_group.h"
#include "mmintent/error.h"
#include "mmintent/training/checkpoint.h"
#include "mmintent/training/interrupt.h"
#include "mmintent/run/run_directory.h"
#include "mmintent/training/trainer.h"
#include "support/cli.h"
#include "support/support.h"
#include "support/synthetic.h"

#include <gmock/gmock.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <thread>

namespace mmintent {
namespace {

using ::testing::HasSubstr;

/// Runs `body(rank, comm)` on `world` threads, each joined to one Gloo process group on
/// loopback; rethrows the first exception of any rank after all have ended.
void run_ranks(int world, const std::function<void(int, std::shared_ptr<Communicator>)>& body,
               double timeout_seconds = 60) {
  const int port = test::free_tcp_port();
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        WorldInfo w;
        w.rank = r;
        w.world_size = world;
        w.local_rank = r;
        w.master_addr = "127.0.0.1";
        w.master_port = port;
        DistributedOptions o;
        o.timeout_seconds = timeout_seconds;
        body(r, init_process_group(w, o, c10::Device(c10::kCPU)));
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

class CollectivesTest : public test::SeededTest {};

TEST_F(CollectivesTest, SumsBroadcastsAndBytes) {
  run_ranks(2, [](int rank, std::shared_ptr<Communicator> comm) {
    EXPECT_EQ(comm->world_size(), 2);
    EXPECT_EQ(comm->rank(), rank);
    EXPECT_EQ(comm->backend(), "gloo");
    const auto sum = all_reduce_sum(*comm, {1.0 + rank, 10.0 * rank, 0.5});
    EXPECT_EQ(sum, (std::vector<double>{3.0, 10.0, 1.0}));
    const auto root = broadcast(*comm, std::vector<double>{rank + 7.0, -1.0 * rank}, 1);
    EXPECT_EQ(root, (std::vector<double>{8.0, -1.0}));
    const std::string payload("tok\0enizer\xff", 11);
    EXPECT_EQ(broadcast_bytes(*comm, rank == 0 ? payload : std::string("other"), 0), payload);
    comm->barrier();
  });
}

TEST_F(CollectivesTest, GradientReducerSumsInBucketsAndCarriesExtras) {
  run_ranks(2, [](int rank, std::shared_ptr<Communicator> comm) {
    std::vector<at::Tensor> params{torch::zeros({5, 3}, torch::requires_grad()),
                                   torch::zeros({7}, torch::requires_grad()),
                                   torch::zeros({2, 2}, torch::requires_grad()),
                                   torch::zeros({4})};  // frozen: not reduced
    // 32-byte buckets: 15 floats alone, then 7, then 4.
    GradientReducer reducer(*comm, params, 32);
    EXPECT_EQ(reducer.num_buckets(), 3);
    params[0].mutable_grad() = torch::full({5, 3}, 1.0f + rank);
    params[1].mutable_grad() = torch::arange(7, torch::kFloat) * (rank + 1);
    if (rank == 0) params[2].mutable_grad() = torch::ones({2, 2});  // rank 1 did not use it
    const auto extra = reducer.reduce({0.25 * (rank + 1), rank == 1 ? 1.0 : 0.0});
    EXPECT_TRUE(params[0].grad().equal(torch::full({5, 3}, 3.0f)));
    EXPECT_TRUE(params[1].grad().equal(torch::arange(7, torch::kFloat) * 3));
    EXPECT_TRUE(params[2].grad().equal(torch::ones({2, 2})));
    EXPECT_FALSE(params[3].grad().defined());
    ASSERT_EQ(extra.size(), 2u);
    EXPECT_DOUBLE_EQ(extra[0], 0.75);
    EXPECT_DOUBLE_EQ(extra[1], 1.0);
  });
}

TEST_F(CollectivesTest, ModuleBroadcastAndBufferMean) {
  run_ranks(2, [](int rank, std::shared_ptr<Communicator> comm) {
    torch::nn::Sequential net(torch::nn::Linear(4, 3), torch::nn::BatchNorm1d(3));
    {
      torch::NoGradGuard no_grad;
      for (auto& p : net->parameters()) p.fill_(static_cast<float>(rank + 1));
    }
    broadcast_module(*comm, *net, 0, /*bucket_bytes=*/16);
    for (const auto& p : net->parameters()) EXPECT_TRUE(p.eq(1.0f).all().item<bool>());
    auto buffers = net->buffers();  // running_mean, running_var, num_batches_tracked
    {
      torch::NoGradGuard no_grad;
      buffers[0].fill_(static_cast<float>(2 * rank));
      buffers[2].fill_(5 + rank);
    }
    average_buffers(*comm, *net);
    EXPECT_TRUE(buffers[0].eq(1.0f).all().item<bool>());
    EXPECT_EQ(buffers[2].item<int64_t>(), 5 + rank);  // integer counters are left alone
  });
}

// ---- Trainers. ----

IntentClassifierOptions model_options() {
  IntentClassifierOptions o;
  o.num_classes(8);
  // No dropout and no batch norm: nothing then differs between the ranks' forward passes and
  // one large batch's (batch norm's batch statistics are per rank, as in PyTorch's DDP).
  o.text(TextEncoderOptions().vocab_size(30).embedding_dim(8).hidden_size(12).dropout(0.0));
  o.image(ImageEncoderOptions().channels({4, 8}).out_dim(10).batch_norm(false).dropout(0.0));
  o.head(HeadOptions().hidden({16}).dropout(0.0));
  return o;
}

TrainerOptions trainer_options(const std::string& run_dir, int64_t epochs) {
  TrainerOptions t;
  t.epochs = epochs;
  t.device = "cpu";
  t.files = RunDirectory(run_dir).trainer_files();
  t.progress = "none";
  t.optimizer.lr = 0.01;
  t.scheduler.type = "cosine";
  t.scheduler.warmup_steps = 2;
  t.grad_clip = 1.0;
  t.early_stopping.metric = "val.loss";
  t.early_stopping.patience = 100;
  t.gradient_bucket_bytes = 4096;  // several buckets per step
  return t;
}

void expect_close(const StateDict& a, const StateDict& b, double atol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    const double diff = (a[i].second - b[i].second).abs().max().item<double>();
    EXPECT_LE(diff, atol) << a[i].first;
  }
}

class DataParallelTest : public test::SeededTest {
 protected:
  test::TempDir dir_;
};

TEST_F(DataParallelTest, TwoRanksOfBatchBMatchOneRankOfBatch2B) {
  // 65 samples in global batches of 32: 32, 32, 1; the last leaves rank 0 an empty part.
  // Also with 2 micro-batches per step (the ranks then communicate every second batch).
  for (const int64_t accum : {1, 2}) {
    SCOPED_TRACE("accumulation_steps " + std::to_string(accum));
    const int64_t n = 65, B = 16, epochs = 3;
    auto options = [&](const std::string& run) {
      auto t = trainer_options(run, epochs);
      t.accumulation_steps = accum;
      return t;
    };
    test::SyntheticSource single_train(n, 2 * B, 1, true), single_val(33, 8, 2, false);
    torch::manual_seed(5);
    Trainer single(IntentClassifier(model_options()), options(""));
    const auto single_fit = single.fit(single_train, &single_val);
    const auto reference = copy_state(*single.model());

    std::vector<StateDict> weights(2);
    std::vector<FitResult> fits(2);
    const auto run = (dir_.path() / ("dp" + std::to_string(accum))).string();
    std::vector<IntentClassifier> models;
    for (int r = 0; r < 2; ++r) {
      torch::manual_seed(r == 0 ? 5 : 99);  // rank 1 starts elsewhere: the broadcast must fix it
      models.emplace_back(model_options());
    }
    run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
      test::SyntheticSource train(n, B, 1, true), val(33, 4, 2, false);
      train.shard(rank, 2);
      val.shard(rank, 2);
      EXPECT_EQ(train.num_batches(), 3);
      EXPECT_EQ(train.batch_size_at(2), rank == 0 ? 0 : 1);
      Trainer trainer(models[rank], options(run), comm);
      fits[rank] = trainer.fit(train, &val);
      weights[rank] = copy_state(*trainer.model());
    });
    expect_close(weights[0], reference, 1e-4);
    expect_close(weights[1], weights[0], 0.0);  // the ranks agree exactly
    ASSERT_EQ(fits[0].history.size(), static_cast<size_t>(epochs));
    for (int64_t e = 0; e < epochs; ++e) {
      const auto& dp = fits[0].history[e].metrics;
      const auto& one = single_fit.history[e].metrics;
      // Reduced from counts over the shards: the same figures as one process's.
      EXPECT_NEAR(dp.at("val.accuracy"), one.at("val.accuracy"), 1e-12);
      EXPECT_NEAR(dp.at("val.macro_f1"), one.at("val.macro_f1"), 1e-12);
      EXPECT_NEAR(dp.at("val.loss"), one.at("val.loss"), 1e-4);
      EXPECT_NEAR(dp.at("train.loss"), one.at("train.loss"), 1e-4);
      EXPECT_NEAR(dp.at("train.accuracy"), one.at("train.accuracy"), 1e-12);
      EXPECT_EQ(fits[1].history[e].metrics, dp);
    }
    // Only rank 0 wrote, once per epoch.
    EXPECT_TRUE(std::filesystem::exists(run + "/last.pt"));
    EXPECT_TRUE(std::filesystem::exists(run + "/model.pt"));
    std::ifstream lines(run + "/metrics.jsonl");
    int count = 0;
    for (std::string line; std::getline(lines, line);) ++count;
    EXPECT_EQ(count, epochs);
  }
}

TEST_F(DataParallelTest, AdversarialTrainingOnTwoRanksMatchesOneRank) {
  // FGM and PGD: each rank's perturbation is per sample, and both backward passes come before
  // the step's one gradient reduction, so 2 ranks x B step as 1 rank x 2B (with accumulation).
  for (const std::string method : {"fgm", "pgd"}) {
    SCOPED_TRACE(method);
    const int64_t n = 65, B = 16, epochs = 2;
    const auto options = [&](const std::string& run) {
      auto t = trainer_options(run, epochs);
      if (run.empty()) t.files = TrainerFiles{};
      t.early_stopping.enabled = false;  // no validation split
      t.early_stopping.restore_best = false;
      t.accumulation_steps = 2;
      t.adversarial.method = method;
      t.adversarial.epsilon = 0.5;
      t.adversarial.steps = 2;
      t.adversarial.alpha = 0.3;
      t.adversarial.weight = 0.5;
      return t;
    };
    test::SyntheticSource single_train(n, 2 * B, 1, true);
    torch::manual_seed(5);
    Trainer single(IntentClassifier(model_options()), options(""));
    single.fit(single_train, nullptr);
    const auto reference = copy_state(*single.model());

    std::vector<StateDict> weights(2);
    std::vector<IntentClassifier> models;
    for (int r = 0; r < 2; ++r) {
      torch::manual_seed(r == 0 ? 5 : 99);
      models.emplace_back(model_options());
    }
    const auto run = (dir_.path() / ("adv_" + method)).string();
    run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
      test::SyntheticSource train(n, B, 1, true);
      train.shard(rank, 2);
      Trainer trainer(models[rank], options(run), comm);
      trainer.fit(train, nullptr);
      weights[rank] = copy_state(*trainer.model());
    });
    expect_close(weights[0], reference, 1e-4);
    expect_close(weights[1], weights[0], 0.0);
  }
}

TEST_F(DataParallelTest, AStoppedRunResumesToTheUninterruptedWeights) {
  const int64_t n = 64, B = 8, epochs = 3;
  auto options = [&](const std::string& run) {
    auto t = trainer_options(run, epochs);
    t.early_stopping.metric = "val.accuracy";
    t.early_stopping.mode = "max";
    return t;
  };
  auto rank_run = [&](const std::string& run, bool stop_after_first, bool resume,
                      std::vector<StateDict>& out) {
    std::vector<IntentClassifier> models;
    for (int r = 0; r < 2; ++r) {
      torch::manual_seed(11);
      models.emplace_back(model_options());
    }
    run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
      test::SyntheticSource train(n, B, 3, true), val(20, 4, 4, false);
      train.shard(rank, 2);
      val.shard(rank, 2);
      Trainer trainer(models[rank], options(run), comm);
      if (resume) trainer.resume(run + "/last.pt");
      if (stop_after_first && rank == 0) {
        trainer.on_epoch_end = [](const EpochRecord& r) {
          if (r.epoch == 1) request_stop();  // as SIGTERM from torchrun during epoch 2
        };
      }
      try {
        trainer.fit(train, &val);
        EXPECT_FALSE(stop_after_first) << "rank " << rank << ": no Interrupted";
      } catch (const Interrupted& e) {
        EXPECT_TRUE(stop_after_first);
        EXPECT_THAT(e.what(), HasSubstr("interrupted during epoch 2"));  // on both ranks
      }
      out[rank] = copy_state(*trainer.model());
    });
    clear_stop_request();
  };
  std::vector<StateDict> full(2), stopped(2), resumed(2);
  rank_run((dir_.path() / "full").string(), false, false, full);
  const auto run = (dir_.path() / "stopped").string();
  rank_run(run, true, false, stopped);
  EXPECT_EQ(load_checkpoint(run + "/last.pt", *IntentClassifier(model_options()), nullptr,
                            c10::Device(c10::kCPU), false)
                .state.world_size,
            2);
  rank_run(run, false, true, resumed);
  expect_close(resumed[0], full[0], 0.0);
  expect_close(resumed[1], full[1], 0.0);

  // A checkpoint of 2 processes is refused by 1, and the other way round.
  Trainer one(IntentClassifier(model_options()), options(""));
  try {
    one.resume(run + "/last.pt");
    FAIL() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_THAT(e.what(), HasSubstr("written by a run of 2 process(es); this run has 1"));
  }
}

TEST_F(DataParallelTest, ARankThatLeavesOrHangsFailsTheOthersWithinTheTimeout) {
  for (const bool hang : {false, true}) {
    SCOPED_TRACE(hang ? "the other rank hangs" : "the other rank leaves");
    std::atomic<bool> done{false};
    std::string message;
    double seconds = 0;
    run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
      if (rank == 1) {
        // Leaves at once (its process group closes), or stays connected but never joins.
        while (hang && !done) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        return;
      }
      test::SyntheticSource train(32, 8, 1, true);
      train.shard(0, 2);
      torch::manual_seed(1);
      auto options = trainer_options("", 2);
      options.early_stopping.metric = "train.loss";
      Trainer trainer(IntentClassifier(model_options()), options, comm);
      const auto start = std::chrono::steady_clock::now();
      try {
        trainer.fit(train, nullptr);
        ADD_FAILURE() << "no DistributedError";
      } catch (const DistributedError& e) {
        message = e.what();
      }
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      done = true;
    }, /*timeout_seconds=*/3);
    EXPECT_THAT(message, HasSubstr("rank 0 of 2"));
    EXPECT_THAT(message, HasSubstr("distributed.timeout_seconds (3 s)"));
    EXPECT_LT(seconds, 30.0);
  }
}

TEST_F(DataParallelTest, RanksThatReadDifferentDataStopTogether) {
  std::vector<std::string> messages(2);
  run_ranks(2, [&](int rank, std::shared_ptr<Communicator> comm) {
    // Rank 1 lost 16 samples (skipped on its host, say).
    test::SyntheticSource train(rank == 0 ? 64 : 48, 8, 1, true);
    train.shard(rank, 2);
    auto options = trainer_options("", 2);
    options.early_stopping.metric = "train.loss";
    torch::manual_seed(1);
    Trainer trainer(IntentClassifier(model_options()), options, comm);
    try {
      trainer.fit(train, nullptr);
    } catch (const DistributedError& e) {
      messages[rank] = e.what();
    }
  });
  EXPECT_THAT(messages[0], HasSubstr("rank 0: the ranks are not on the same run (1 rank(s) differ"));
  EXPECT_THAT(messages[1], HasSubstr("this rank: 48 training samples in 3 global batches, 0 validation "
                                     "samples, resumed after epoch 0 (step 0); rank 0: 64 training "
                                     "samples in 4 global batches"));
}

// ---- The environment torchrun sets. ----

class EnvTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const char* v : {"WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                          "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"}) {
      ::unsetenv(v);
    }
  }
  static void set(const char* name, const char* value) { ::setenv(name, value, 1); }
  static std::string error_of() {
    try {
      world_from_env();
    } catch (const DistributedError& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(EnvTest, ReadsTorchrunsVariables) {
  EXPECT_FALSE(world_from_env().distributed());  // nothing set: one process
  set("WORLD_SIZE", "1");
  EXPECT_FALSE(world_from_env().distributed());
  set("WORLD_SIZE", "4");
  set("RANK", "3");
  set("LOCAL_RANK", "1");
  set("LOCAL_WORLD_SIZE", "2");
  set("MASTER_ADDR", "10.0.0.2");
  set("MASTER_PORT", "29400");
  set("TORCHELASTIC_USE_AGENT_STORE", "True");
  const auto w = world_from_env();
  EXPECT_TRUE(w.distributed());
  EXPECT_EQ(w.rank, 3);
  EXPECT_EQ(w.world_size, 4);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_world_size, 2);
  EXPECT_EQ(w.master_addr, "10.0.0.2");
  EXPECT_EQ(w.master_port, 29400);
  EXPECT_TRUE(w.agent_store);
  EXPECT_EQ(rank_device("cpu", 1), "cpu");
}

TEST_F(EnvTest, ThreadsFollowTheLauncherAndOversubscriptionIsSaid) {
  std::vector<std::pair<log::Level, std::string>> said;
  log::set_sink([&](log::Level level, const std::string&, const std::string& message) {
    said.emplace_back(level, message);
  });
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  WorldInfo w;
  w.world_size = 2;
  w.local_world_size = 2;
  // 0: the host's cores divided among its processes, and the log says so.
  EXPECT_EQ(rank_threads(0, 0, w), std::max(1, cores / 2));
  ASSERT_FALSE(said.empty());
  EXPECT_THAT(said.front().second, HasSubstr("per process (" + std::to_string(cores) + " cores, 2 processes"));
  // A configured count is kept; more threads than cores across the processes is a warning.
  said.clear();
  EXPECT_EQ(rank_threads(cores, 1, w), cores);
  ASSERT_EQ(said.size(), 1u);
  EXPECT_EQ(said[0].first, log::Level::warn);
  EXPECT_THAT(said[0].second, HasSubstr("oversubscribed: 2 processes x (" + std::to_string(cores) +
                                            " threads + 1 loader workers)"));
  // One process with one thread per core and no workers: nothing to say.
  said.clear();
  WorldInfo one;
  EXPECT_EQ(rank_threads(cores, 0, one), cores);
  EXPECT_TRUE(said.empty());
  log::set_sink(nullptr);
}

TEST_F(EnvTest, MalformedOrMissingVariablesAreNamed) {
  set("WORLD_SIZE", "two");
  EXPECT_THAT(error_of(), HasSubstr("WORLD_SIZE='two' is not a whole number"));
  set("WORLD_SIZE", "2");
  EXPECT_THAT(error_of(), HasSubstr("RANK is not set"));
  set("RANK", "2");
  EXPECT_THAT(error_of(), HasSubstr("RANK='2' is not a whole number in [0, 1]"));
  set("RANK", "1");
  EXPECT_THAT(error_of(), HasSubstr("MASTER_ADDR is not set"));
  set("MASTER_ADDR", "127.0.0.1");
  EXPECT_THAT(error_of(), HasSubstr("MASTER_PORT is not set"));
  set("MASTER_PORT", "70000");
  EXPECT_THAT(error_of(), HasSubstr("MASTER_PORT='70000'"));
  set("MASTER_PORT", "29500");
  EXPECT_EQ(error_of(), "");
}

TEST_F(EnvTest, NoRendezvousWithinTheTimeoutIsAClearError) {
  WorldInfo w;
  w.rank = 1;  // a client whose rank 0 never comes
  w.world_size = 2;
  w.master_port = test::free_tcp_port();
  DistributedOptions o;
  o.timeout_seconds = 2;
  const auto start = std::chrono::steady_clock::now();
  try {
    init_process_group(w, o, c10::Device(c10::kCPU));
    FAIL() << "no DistributedError";
  } catch (const DistributedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank 1"));
    EXPECT_THAT(e.what(), HasSubstr("127.0.0.1:" + std::to_string(w.master_port)));
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30.0);
}

}  // namespace
}  // namespace mmintent
