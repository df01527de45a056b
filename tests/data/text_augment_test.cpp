// Text augmentation (data.augment.text): noisy texts tokenised again per (seed, epoch, sample),
// only while training with augmentation on; with every rate 0, the plain ids.

#include "mmintent/config/config.h"
#include "mmintent/data/augment.h"
#include "mmintent/data/loader.h"
#include "mmintent/run/setup.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/data_fixture.h"

namespace mmintent {
namespace {

using test::to_vector;
using TextAugmentTest = test::DataFixture;

/// Each sample's ids in `b` (unpadded), by sample index.
std::map<int64_t, std::vector<int64_t>> ids_by_sample(const Batch& b) {
  std::map<int64_t, std::vector<int64_t>> out;
  const auto& text = b.input("text");
  for (int64_t r = 0; r < b.size(); ++r) {
    auto row = to_vector(text.data[r]);
    row.resize(static_cast<size_t>(text.lengths[r].item<int64_t>()));
    out[b.indices[r].item<int64_t>()] = row;
  }
  return out;
}

std::map<int64_t, std::vector<int64_t>> one_pass_ids(DataLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::map<int64_t, std::vector<int64_t>> out;
  while (auto b = loader.next()) {
    for (auto& [i, ids] : ids_by_sample(*b)) out[i] = ids;
  }
  return out;
}

std::shared_ptr<AugmentOptions> text_noise(double typos, double deletion, double swap, double dropout) {
  auto a = std::make_shared<AugmentOptions>();
  a->enabled = true;
  a->text.typos = typos;
  a->text.deletion = deletion;
  a->text.swap = swap;
  a->text.token_dropout = dropout;
  return a;
}

LoaderOptions loader_options(std::shared_ptr<AugmentOptions> augment, int64_t workers = 1) {
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = true;
  o.num_workers = workers;
  o.seed = 42;
  o.augment = std::move(augment);
  return o;
}

TEST_F(TextAugmentTest, TheSameSeedEpochAndSampleGiveTheSameIdsAnotherEpochOthers) {
  auto d = make_default(20);
  const auto noise = text_noise(0.3, 0.2, 0.2, 0.1);
  DataLoader a(d, loader_options(noise, 0)), b(d, loader_options(noise, 2));
  const auto first = one_pass_ids(a, 1);
  ASSERT_EQ(first.size(), 20u);
  EXPECT_EQ(one_pass_ids(b, 1), first);  // threads and batch order do not matter
  EXPECT_EQ(one_pass_ids(a, 1), first);
  const auto other_epoch = one_pass_ids(a, 2);
  int differs_from_plain = 0, differs_between_epochs = 0;
  for (const auto& [i, ids] : first) {
    EXPECT_FALSE(ids.empty()) << i;
    differs_from_plain += ids != d->token_ids(i);
    differs_between_epochs += ids != other_epoch.at(i);
  }
  EXPECT_GE(differs_from_plain, 10);
  EXPECT_GE(differs_between_epochs, 10);
  // collate itself: the same (seed, sample) in another batch gives the same ids.
  const auto one = ids_by_sample(d->collate({3, 7}, noise.get(), 99));
  const auto other = ids_by_sample(d->collate({7, 1, 3}, noise.get(), 99));
  EXPECT_EQ(one.at(3), other.at(3));
  EXPECT_EQ(one.at(7), other.at(7));
}

TEST_F(TextAugmentTest, ZeroRatesDisabledAugmentationAndEvaluationLeaveTheIds) {
  auto d = make_default(12);
  const auto plain = [&](const std::map<int64_t, std::vector<int64_t>>& got) {
    ASSERT_EQ(got.size(), 12u);
    for (const auto& [i, ids] : got) EXPECT_EQ(ids, d->token_ids(i)) << i;
  };
  // Augmentation on (image noise too), every text rate 0.
  auto zero = text_noise(0, 0, 0, 0);
  zero->hflip = 0.5;
  DataLoader on(d, loader_options(zero));
  plain(one_pass_ids(on, 0));
  // Text noise set but augmentation off.
  auto off = text_noise(1, 0.5, 0.5, 0.5);
  off->enabled = false;
  DataLoader disabled(d, loader_options(off));
  plain(one_pass_ids(disabled, 0));
  // The config's loaders: augmented for training only.
  Config c;
  c.data.augment = *text_noise(1, 0, 0, 0.3);
  c.data.loader.batch_size = 4;
  auto evaluation = make_loader(c, d, /*training=*/false);
  plain(one_pass_ids(*evaluation, 0));
  auto training = make_loader(c, d, /*training=*/true);
  int differs = 0;
  for (const auto& [i, ids] : one_pass_ids(*training, 0)) differs += ids != d->token_ids(i);
  EXPECT_GE(differs, 6);
}

TEST_F(TextAugmentTest, TokenDropoutRemovesTokensButKeepsOne) {
  auto d = make_default(10);
  std::vector<int64_t> all(10);
  for (int64_t i = 0; i < 10; ++i) all[static_cast<size_t>(i)] = i;
  const auto dropped = ids_by_sample(d->collate(all, text_noise(0, 0, 0, 0.5).get(), 5));
  int shorter = 0;
  for (const auto& [i, ids] : dropped) {
    const auto& original = d->token_ids(i);
    ASSERT_GE(ids.size(), 1u);
    shorter += ids.size() < original.size();
    // What stays is a subsequence of the original ids.
    size_t k = 0;
    for (auto id : original) k += k < ids.size() && ids[k] == id;
    EXPECT_EQ(k, ids.size()) << i;
  }
  EXPECT_GE(shorter, 5);
  // Dropping every token keeps one of them.
  for (const auto& [i, ids] : ids_by_sample(d->collate(all, text_noise(0, 0, 0, 1).get(), 5))) {
    EXPECT_EQ(ids.size(), 1u) << i;
  }
}

}  // namespace
}  // namespace mmintent
