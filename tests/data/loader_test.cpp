// Tests of DataLoader on tiny generated data sets (see data_fixture.h): order, batches,
// shards, worker processes and their errors, restarts.

#include "mmintent/data/loader.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <thread>
#include <vector>

#include "data/data_fixture.h"
#include "mmintent/data/dataset.h"
#include "mmintent/error.h"
#include "support/support.h"

namespace mmintent {
namespace {

namespace fs = std::filesystem;
using test::expect_same_batch;
using test::grey_pattern;
using test::to_vector;
using LoaderTest = test::DataFixture;

/// Aborts the process with a message when a test section runs longer than `seconds`: a deadlock
/// in the loader then fails quickly and says where, instead of hanging until the ctest timeout.
class Watchdog {
 public:
  Watchdog(const char* what, int seconds) : what_(what) {
    thread_ = std::thread([this, seconds] {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_; })) {
        std::fprintf(stderr, "Watchdog: '%s' did not finish in %d s (deadlock?)\n", what_, seconds);
        std::abort();
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  const char* what_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

/// Number of threads of this process (Linux), or -1 where /proc is not available.
int thread_count() {
  std::error_code ec;
  if (!fs::exists("/proc/self/task", ec)) return -1;
  int n = 0;
  for (auto it = fs::directory_iterator("/proc/self/task", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

LoaderOptions loader_options(int64_t batch_size, bool shuffle, int64_t workers,
                             uint64_t seed = 42) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = shuffle;
  o.num_workers = workers;
  o.seed = seed;
  return o;
}

std::vector<Batch> one_pass(DataLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

TEST_F(LoaderTest, OrderIsASeededPermutationPerEpoch) {
  auto d = make_default(23);
  DataLoader a(d, loader_options(4, true, 0, 42));
  DataLoader same(d, loader_options(4, true, 2, 42));
  DataLoader other_seed(d, loader_options(4, true, 0, 43));
  DataLoader plain(d, loader_options(4, false, 1, 42));

  std::vector<int64_t> identity(23);
  std::iota(identity.begin(), identity.end(), 0);
  for (int64_t epoch = 0; epoch < 4; ++epoch) {
    auto o = a.order(epoch);
    auto sorted = o;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, identity) << "epoch " << epoch << " is not a permutation";
    EXPECT_NE(o, identity) << "epoch " << epoch;
    EXPECT_EQ(o, a.order(epoch));
    EXPECT_EQ(o, same.order(epoch));
    EXPECT_NE(o, other_seed.order(epoch));
    EXPECT_EQ(plain.order(epoch), identity);
  }
  EXPECT_NE(a.order(0), a.order(1));
  EXPECT_NE(a.order(1), a.order(2));
}

TEST_F(LoaderTest, BatchesFollowTheOrderAndEndWithNullopt) {
  auto d = make_default(10);
  for (int64_t workers : {0, 2}) {
    DataLoader loader(d, loader_options(4, true, workers));
    const auto batches = one_pass(loader, 3);
    ASSERT_EQ(static_cast<int64_t>(batches.size()), loader.num_batches());
    std::vector<int64_t> seen;
    for (size_t i = 0; i < batches.size(); ++i) {
      EXPECT_EQ(batches[i].size(), loader.batch_size_at(static_cast<int64_t>(i)));
      const auto idx = to_vector(batches[i].indices);
      seen.insert(seen.end(), idx.begin(), idx.end());
      for (size_t r = 0; r < idx.size(); ++r) {
        EXPECT_EQ(batches[i].labels[static_cast<int64_t>(r)].item<int64_t>(), d->label(idx[r]));
      }
    }
    EXPECT_EQ(seen, loader.order(3)) << workers << " workers";
    EXPECT_FALSE(loader.next().has_value());
    EXPECT_FALSE(loader.next().has_value());
  }
}

TEST_F(LoaderTest, NumBatchesBatchSizeAtAndDropLast) {
  auto d = make_default(10);
  DataLoader keep(d, loader_options(4, false, 1));
  EXPECT_EQ(keep.num_batches(), 3);
  EXPECT_EQ(keep.num_samples(), 10);
  EXPECT_EQ(keep.batch_size_at(0), 4);
  EXPECT_EQ(keep.batch_size_at(1), 4);
  EXPECT_EQ(keep.batch_size_at(2), 2);
  auto kb = one_pass(keep, 0);
  ASSERT_EQ(kb.size(), 3u);
  EXPECT_EQ(kb[2].size(), 2);

  auto o = loader_options(4, true, 2);
  o.drop_last = true;
  DataLoader drop(d, o);
  EXPECT_EQ(drop.num_batches(), 2);
  EXPECT_EQ(drop.num_samples(), 8);
  EXPECT_EQ(drop.batch_size_at(1), 4);
  auto db = one_pass(drop, 1);
  ASSERT_EQ(db.size(), 2u);
  EXPECT_EQ(db[0].size(), 4);
  EXPECT_EQ(db[1].size(), 4);

  DataLoader exact(d, loader_options(5, false, 0));
  EXPECT_EQ(exact.num_batches(), 2);
  EXPECT_EQ(exact.batch_size_at(1), 5);

  // A batch larger than the data set: one short batch, or none with drop_last.
  DataLoader big(d, loader_options(64, false, 1));
  EXPECT_EQ(big.num_batches(), 1);
  EXPECT_EQ(big.batch_size_at(0), 10);
  auto big_drop_o = loader_options(64, false, 2);
  big_drop_o.drop_last = true;
  DataLoader big_drop(d, big_drop_o);
  EXPECT_EQ(big_drop.num_batches(), 0);
  EXPECT_EQ(big_drop.num_samples(), 0);
  EXPECT_TRUE(one_pass(big_drop, 0).empty());

  EXPECT_THROW(DataLoader(d, loader_options(0, false, 0)), Error);
  EXPECT_THROW(DataLoader(d, loader_options(4, false, -1)), Error);
  EXPECT_THROW(DataLoader(nullptr, loader_options(4, false, 0)), Error);
}

TEST_F(LoaderTest, ShardsAreDisjointCoverEachPassAndMatchOneLoaderOfTheGlobalBatch) {
  // 23 samples, 3 ranks x batch 3: global batches of 9, 9 and 5 (split 1, 2, 2).
  auto d = make_default(23);
  const int64_t W = 3, B = 3;
  DataLoader whole(d, loader_options(W * B, true, 0, 42));
  std::vector<std::unique_ptr<DataLoader>> ranks;
  for (int64_t r = 0; r < W; ++r) {
    auto o = loader_options(B, true, r == 1 ? 2 : 0, 42);
    o.rank = r;
    o.world_size = W;
    ranks.push_back(std::make_unique<DataLoader>(d, o));
  }
  EXPECT_EQ(ranks[0]->batch_size_at(2), 1);
  EXPECT_EQ(ranks[2]->batch_size_at(2), 2);
  EXPECT_EQ(ranks[0]->num_samples() + ranks[1]->num_samples() + ranks[2]->num_samples(), 23);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto reference = one_pass(whole, epoch);
    std::vector<std::vector<Batch>> parts;
    for (auto& l : ranks) {
      EXPECT_EQ(l->num_batches(), whole.num_batches());  // the ranks step together
      parts.push_back(one_pass(*l, epoch));
    }
    std::vector<int64_t> all;
    for (size_t b = 0; b < reference.size(); ++b) {
      // Global batch b is the ranks' parts of batch b, in rank order.
      std::vector<int64_t> joined;
      for (int64_t r = 0; r < W; ++r) {
        ASSERT_EQ(parts[r].size(), reference.size());
        EXPECT_EQ(ranks[r]->global_batch_size_at(static_cast<int64_t>(b)), reference[b].size());
        const auto idx = to_vector(parts[r][b].indices);
        joined.insert(joined.end(), idx.begin(), idx.end());
      }
      EXPECT_EQ(joined, to_vector(reference[b].indices)) << "epoch " << epoch << " batch " << b;
      all.insert(all.end(), joined.begin(), joined.end());
    }
    std::sort(all.begin(), all.end());
    std::vector<int64_t> identity(23);
    std::iota(identity.begin(), identity.end(), 0);
    EXPECT_EQ(all, identity) << "epoch " << epoch << ": shards overlap or miss samples";
  }
  EXPECT_NE(ranks[0]->order(0), ranks[0]->order(1));  // reshuffled each epoch

  // A part can be empty: 4 ranks x batch 2 over 9 samples leaves 1 sample for the last batch.
  auto o = loader_options(2, false, 0);
  o.rank = 0;
  o.world_size = 4;
  DataLoader sparse(make_default(9), o);
  EXPECT_EQ(sparse.num_batches(), 2);
  EXPECT_EQ(sparse.batch_size_at(1), 0);
  const auto sb = one_pass(sparse, 0);
  ASSERT_EQ(sb.size(), 2u);
  EXPECT_EQ(sb[1].size(), 0);

  auto bad = loader_options(2, false, 0);
  bad.rank = 2;
  bad.world_size = 2;
  EXPECT_THROW(DataLoader(d, bad), Error);
}

TEST_F(LoaderTest, WorkerCountsGiveIdenticalBatchesWithAugmentation) {
  Watchdog watchdog("WorkerCountsGiveIdenticalBatchesWithAugmentation", 60);
  auto d = make_default(21);
  std::vector<Batch> reference;
  for (int64_t workers : {0, 1, 2}) {
    for (int64_t prefetch : {1, 3}) {
      auto o = loader_options(4, true, workers, 9);
      o.prefetch = prefetch;
      o.augment = strong_augment();
      DataLoader loader(d, o);
      const auto first = one_pass(loader, 2);
      const auto second = one_pass(loader, 2);
      ASSERT_EQ(first.size(), 6u);
      ASSERT_EQ(second.size(), 6u);
      for (size_t i = 0; i < first.size(); ++i) {
        const std::string what = std::to_string(workers) + " workers, prefetch " +
                                 std::to_string(prefetch) + ", batch " + std::to_string(i);
        expect_same_batch(first[i], second[i], what + " (second pass)");
        if (!reference.empty()) expect_same_batch(first[i], reference[i], what + " (vs 0 workers)");
      }
      if (reference.empty()) reference = first;
    }
  }
  // Another epoch: another order and other augmentations.
  auto o = loader_options(4, true, 2, 9);
  o.augment = strong_augment();
  DataLoader loader(d, o);
  const auto next_epoch = one_pass(loader, 3);
  EXPECT_NE(to_vector(next_epoch[0].indices), to_vector(reference[0].indices));
  // The same sample is augmented differently in epochs 2 and 3.
  const auto idx2 = to_vector(reference[0].indices);
  bool found = false;
  for (const auto& b : next_epoch) {
    const auto idx3 = to_vector(b.indices);
    for (size_t r = 0; r < idx3.size(); ++r) {
      if (idx3[r] != idx2[0]) continue;
      found = true;
      EXPECT_FALSE(at::equal(b.input("image").data[static_cast<int64_t>(r)], reference[0].input("image").data[0]));
    }
  }
  EXPECT_TRUE(found);
  // The evaluation-style loader (no augmentation) gives the plain images.
  DataLoader plain(d, loader_options(21, false, 2));
  const auto all = one_pass(plain, 5);
  ASSERT_EQ(all.size(), 1u);
  std::vector<int64_t> every(21);
  std::iota(every.begin(), every.end(), 0);
  expect_same_batch(all[0], d->collate(every, nullptr, 0), "plain loader");
}

TEST_F(LoaderTest, WorkerErrorSurfacesAsDataErrorAndLoaderRestarts) {
  Watchdog watchdog("WorkerErrorSurfacesAsDataErrorAndLoaderRestarts", 60);
  auto o = options();
  o.cache_images = false;
  auto d = make_default(12, o);
  const auto victim = dir_.path() / "img_6.png";  // sample 6: batch 3 with batch size 2
  for (int64_t workers : {0, 1, 2}) {
    SCOPED_TRACE(std::to_string(workers) + " workers");
    DataLoader loader(d, loader_options(2, false, workers));
    const auto good = one_pass(loader, 0);
    ASSERT_EQ(good.size(), 6u);

    fs::remove(victim);
    loader.start_epoch(0);
    int64_t returned = 0;
    bool threw = false;
    try {
      while (loader.next()) ++returned;
    } catch (const DataError& e) {
      threw = true;
      EXPECT_NE(std::string(e.what()).find("img_6.png"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(threw) << "a deleted image must surface as DataError from next()";
    EXPECT_EQ(returned, 3) << "the batches before the failing one are returned";

    // Restarting while the image is still missing fails again, without hanging.
    loader.start_epoch(1);
    EXPECT_THROW(
        {
          while (loader.next()) {
          }
        },
        DataError);

    // With the image back, the loader restarts and gives the same batches as before.
    ASSERT_TRUE(cv::imwrite(victim.string(), grey_pattern(6)));
    const auto again = one_pass(loader, 0);
    ASSERT_EQ(again.size(), good.size());
    for (size_t i = 0; i < good.size(); ++i) expect_same_batch(again[i], good[i], "after restart");
  }
}

TEST_F(LoaderTest, RestartingMidEpochDoesNotDeadlockOrLeak) {
  Watchdog watchdog("RestartingMidEpochDoesNotDeadlockOrLeak", 60);
  auto o = options();
  o.cache_images = false;  // workers do real work (decoding) while being stopped
  auto d = make_default(40, o);
  const auto augment = strong_augment();

  // Warm up (OpenCV and LibTorch may start their own pools once), then count threads.
  {
    auto lo = loader_options(2, true, 2);
    lo.augment = augment;
    DataLoader warm(d, lo);
    one_pass(warm, 0);
  }
  const int threads_before = thread_count();
  const long uses_before = d.use_count();

  std::vector<Batch> reference;
  {
    auto lo = loader_options(2, true, 0);
    lo.augment = augment;
    DataLoader ref(d, lo);
    reference = one_pass(ref, 7);
  }
  {
    auto lo = loader_options(2, true, 2);
    lo.prefetch = 1;
    lo.augment = augment;
    DataLoader loader(d, lo);
    for (int round = 0; round < 30; ++round) {
      loader.start_epoch(round % 5);
      for (int k = 0; k < round % 4; ++k) ASSERT_TRUE(loader.next().has_value());
    }
    // Restart twice in a row with nothing taken, then a full pass is intact.
    loader.start_epoch(1);
    loader.start_epoch(7);
    const auto full = one_pass(loader, 7);
    ASSERT_EQ(full.size(), reference.size());
    for (size_t i = 0; i < full.size(); ++i)
      expect_same_batch(full[i], reference[i], "after restarts");
    // Stop midway and let the destructor stop the workers.
    loader.start_epoch(2);
    ASSERT_TRUE(loader.next().has_value());
  }
  // Destroying a loader whose workers never got a start_epoch also works.
  { DataLoader idle(d, loader_options(2, true, 2)); }

  EXPECT_EQ(d.use_count(), uses_before) << "a destroyed loader must release the dataset";
  if (threads_before > 0) {
    EXPECT_EQ(thread_count(), threads_before) << "worker threads left behind";
  }
}

// LIBRARY BUG (reported to the lead): DataLoader::next() before any start_epoch() takes the
// synchronous path (no workers yet) and make_batch() builds indices from the still-empty order_
// (src/data/loader.cpp, make_batch: `order_.begin() + begin .. + end`), reading out of range:
// the process crashes (SIGSEGV seen). Expected: a mmintent::Error saying start_epoch() must be
// called first, or an implicit start_epoch(0). This test accepts either.
TEST_F(LoaderTest, NextBeforeStartEpochDoesNotCrash) {
  auto d = make_default(10);
  for (int64_t workers : {0, 2}) {
    DataLoader loader(d, loader_options(4, true, workers));
    try {
      auto b = loader.next();
      ASSERT_TRUE(b.has_value());
      const auto idx = to_vector(b->indices);
      const auto order = loader.order(0);
      EXPECT_EQ(idx, std::vector<int64_t>(order.begin(), order.begin() + 4));
    } catch (const Error&) {
      // Also acceptable: a clear error.
    }
    // Either way the loader works normally afterwards.
    EXPECT_EQ(one_pass(loader, 0).size(), 3u);
  }
}


}  // namespace
}  // namespace mmintent
