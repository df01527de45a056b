// Multi-process runs of the `mmintent` CLI on loopback: 2 processes started with the
// variables torchrun sets (and by torchrun itself when it is installed) train the end-to-end
// fixture; rank 0 alone writes the run; resume needs the same number of processes; a killed
// rank makes the other exit with code 7 (DistributedError) instead of hanging; only `train`
// runs as several processes.

#include "support/cli.h"
#include "support/fixture.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#ifndef MMINTENT_CLI
#error "MMINTENT_CLI must name the built mmintent executable"
#endif

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::CliProcess;
using test::CliResult;

size_t line_count(const fs::path& path) {
  std::ifstream in(path);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

/// `name` found on PATH, or "".
std::string on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const auto candidate = fs::path(dir) / name;
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

class MultiProcessCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path();
    test::write_fixture_split(root_, "train", 160, 1);
    test::write_fixture_split(root_, "val", 40, 2);
    test::write_fixture_split(root_, "test", 40, 3);
    run_dir_ = (root_ / "runs" / "dp").string();
    config_ = dir_.write("config.yaml", test::fixture_config(run_dir_));
  }

  /// The environment of rank `rank` of `world` (as torchrun would set it).
  std::vector<std::string> rank_env(int rank, int world, int port) const {
    return {"WORLD_SIZE=" + std::to_string(world), "RANK=" + std::to_string(rank),
            "LOCAL_RANK=" + std::to_string(rank), "MASTER_ADDR=127.0.0.1",
            "MASTER_PORT=" + std::to_string(port)};
  }

  /// Starts `mmintent ARGS` as each of 2 ranks.
  std::vector<std::unique_ptr<CliProcess>> start_ranks(const std::vector<std::string>& args) {
    const int port = test::free_tcp_port();
    std::vector<std::unique_ptr<CliProcess>> ranks;
    for (int r = 0; r < 2; ++r) {
      ranks.push_back(std::make_unique<CliProcess>(MMINTENT_CLI, args, root_, rank_env(r, 2, port),
                                                   root_ / "cli_logs"));
    }
    return ranks;
  }

  std::vector<CliResult> run_ranks(const std::vector<std::string>& args) {
    auto ranks = start_ranks(args);
    std::vector<CliResult> out;
    for (auto& p : ranks) out.push_back(p->wait(600));
    return out;
  }

  CliResult cli(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    return test::run_cli(MMINTENT_CLI, args, root_, env, root_ / "cli_logs");
  }

  test::TempDir dir_;
  fs::path root_;
  std::string run_dir_, config_;
};

TEST_F(MultiProcessCliTest, TwoRanksTrainAndOnlyRankZeroWrites) {
  const auto r = run_ranks({"train", config_, "runtime.threads=1", "data.loader.batch_size=8"});
  ASSERT_EQ(r[0].code, 0) << r[0].dump();
  ASSERT_EQ(r[1].code, 0) << r[1].dump();
  EXPECT_NE(r[0].out.find("run directory: "), std::string::npos) << r[0].dump();
  EXPECT_NE(r[1].out.find("rank 1 of 2: done"), std::string::npos) << r[1].dump();
  // Rank 1 logs only warnings and errors (after joining); the run's log is rank 0's.
  EXPECT_EQ(r[1].err.find("[trainer] epoch"), std::string::npos) << r[1].dump();
  const fs::path run(run_dir_);
  for (const char* f : {"config.yaml", "labels.json", "tokenizer.model", "last.pt", "model.pt",
                        "metrics.jsonl", "report.json", "train.log"}) {
    EXPECT_TRUE(fs::is_regular_file(run / f)) << f;
  }
  EXPECT_EQ(line_count(run / "metrics.jsonl"), 6u);  // one line per epoch, not one per rank
  EXPECT_NE(test::read_file((run / "train.log").string()).find("data-parallel over 2 ranks (gloo)"),
            std::string::npos);
  std::ifstream in(run / "report.json");
  const auto report = json::parse(in);
  EXPECT_EQ(report["test"]["count"].get<int64_t>(), 40);  // rank 0 evaluates every sample
  EXPECT_GE(report["test"]["accuracy"].get<double>(), 0.75) << report.dump(2);

  // Resuming needs the same number of processes.
  const auto single = cli({"train", config_, "--resume", "auto"});
  EXPECT_EQ(single.code, 5) << single.dump();
  EXPECT_NE(single.error_line().find("written by a run of 2 process(es); this run has 1"),
            std::string::npos)
      << single.dump();
  const auto again = run_ranks({"train", config_, "--resume", "auto", "runtime.threads=1",
                                "data.loader.batch_size=8"});
  EXPECT_EQ(again[0].code, 0) << again[0].dump();
  EXPECT_EQ(again[1].code, 0) << again[1].dump();
  EXPECT_EQ(line_count(run / "metrics.jsonl"), 6u);
}

TEST_F(MultiProcessCliTest, AKilledRankStopsTheOtherWithExitCode7) {
  auto ranks = start_ranks({"train", config_, "runtime.threads=1", "train.epochs=1000",
                            "distributed.timeout_seconds=20"});
  const auto metrics = fs::path(run_dir_) / "metrics.jsonl";
  for (int i = 0; i < 3000 && line_count(metrics) < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(line_count(metrics), 1u) << "no epoch finished in 300 s";
  ranks[1]->kill(SIGKILL);
  const auto start = std::chrono::steady_clock::now();
  const auto r0 = ranks[0]->wait(300);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r0.code, 7) << r0.dump();
  EXPECT_NE(r0.error_line().find("rank 0 of 2"), std::string::npos) << r0.dump();
  EXPECT_LT(seconds, 60.0) << r0.dump();
  EXPECT_EQ(ranks[1]->wait(10).code, 128 + SIGKILL);
  // The last completed epoch's checkpoint is kept.
  EXPECT_TRUE(fs::is_regular_file(fs::path(run_dir_) / "last.pt"));
}

TEST_F(MultiProcessCliTest, OnlyTrainRunsAsSeveralProcesses) {
  const auto r = cli({"eval", run_dir_}, rank_env(0, 2, 29500));
  EXPECT_EQ(r.code, 2) << r.dump();
  EXPECT_NE(r.error_line().find("only 'train' runs as several processes"), std::string::npos) << r.dump();
  const auto bad = cli({"train", config_}, {"WORLD_SIZE=2", "RANK=0"});
  EXPECT_EQ(bad.code, 7) << bad.dump();
  EXPECT_NE(bad.error_line().find("MASTER_ADDR is not set"), std::string::npos) << bad.dump();
}

TEST_F(MultiProcessCliTest, TorchrunLaunchesTheRanks) {
  const auto torchrun = on_path("torchrun");
  if (torchrun.empty()) GTEST_SKIP() << "torchrun is not installed (Debian: python3-torch; scripts/setup.sh)";
  // Debian's torchrun (1.13, Python 3.11) needs --redirects and --tee set (docs/DISTRIBUTED.md).
  const auto r = test::run_cli(
      torchrun,
      {"--no_python", "--nproc_per_node=2", "--redirects", "1", "--tee", "1", "--log_dir",
       (root_ / "torchrun_logs").string(), "--master_port", std::to_string(test::free_tcp_port()),
       MMINTENT_CLI, "train", config_, "runtime.threads=0", "train.epochs=2"},
      root_, {}, root_ / "cli_logs");
  ASSERT_EQ(r.code, 0) << r.dump();
  // threads 0 follows the launcher: torchrun's LOCAL_WORLD_SIZE divides the cores.
  EXPECT_NE((r.out + r.err).find("2 processes on this host)"), std::string::npos) << r.dump();
  EXPECT_NE((r.out + r.err).find("rank 1 of 2: done"), std::string::npos) << r.dump();
  EXPECT_TRUE(fs::is_regular_file(fs::path(run_dir_) / "model.pt"));
  EXPECT_EQ(line_count(fs::path(run_dir_) / "metrics.jsonl"), 2u);
}

}  // namespace
}  // namespace mmintent
