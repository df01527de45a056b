// Feedback logs (accepted / corrected / rejected predictions): reading and checking them, the
// training records they stand for, and the source that mixes them with replayed training data.

#include "mmintent/data/feedback.h"
#include "mmintent/error.h"
#include "support/support.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>

namespace mmintent {
namespace {

using test::TempDir;

template <typename Fn>
void expect_data_error(Fn&& fn, const std::string& file, long line,
                       std::initializer_list<std::string> parts) {
  try {
    fn();
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.file(), file) << what;
    EXPECT_EQ(e.line(), line) << what;
    if (line > 0) {
      EXPECT_NE(what.find(file + ":" + std::to_string(line) + ":"), std::string::npos) << what;
    }
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << what;
  }
}

const LabelMap& labels() {
  static const LabelMap map = LabelMap::from_labels({"exchange", "refund", "track"});
  return map;
}

FeedbackReadOptions text_only() {
  FeedbackReadOptions o;
  o.use_image = false;
  return o;
}

DatasetOptions no_modalities() {
  DatasetOptions o;
  o.modalities.clear();
  return o;
}

TEST(FeedbackTest, ReadsTheThreeReactions) {
  TempDir dir;
  const auto path = dir.write(
      "logs/feedback.jsonl",
      "{\"text\": \"send it back\", \"image\": \"a.png\", \"predicted\": \"refund\", "
      "\"reaction\": \"accepted\", \"user\": 17, \"top\": [0.9]}\n"
      "\n"
      "{\"text\": \"swap the size\", \"image\": \"/abs/b.png\", \"predicted\": \"refund\", "
      "\"reaction\": \"corrected\", \"corrected_to\": \"exchange\"}\r\n"
      "{\"text\": \"where is it\", \"image\": \"c.png\", \"predicted\": \"exchange\", "
      "\"reaction\": \"rejected\", \"corrected_to\": null}\n");
  const FeedbackLog log = read_feedback(path, labels());
  ASSERT_EQ(log.records.size(), 3u);
  EXPECT_EQ(log.accepted, 1);
  EXPECT_EQ(log.corrected, 1);
  EXPECT_EQ(log.rejected, 1);
  const auto& a = log.records[0];
  EXPECT_EQ(a.text, "send it back");
  EXPECT_EQ(a.image, (dir.path() / "logs" / "a.png").string());
  EXPECT_EQ(a.reaction, Reaction::accepted);
  EXPECT_EQ(a.line, 1);
  EXPECT_EQ(log.records[1].image, "/abs/b.png");
  EXPECT_EQ(log.records[1].corrected_to, "exchange");
  EXPECT_EQ(log.records[1].line, 3);
  EXPECT_EQ(log.records[2].reaction, Reaction::rejected);
  EXPECT_STREQ(reaction_name(Reaction::corrected), "corrected");

  // Acceptance = confirmation, correction = label, rejection = rejected intent without label.
  const Manifest m = feedback_manifest(log);
  EXPECT_EQ(m.path, path);
  ASSERT_EQ(m.records.size(), 3u);
  EXPECT_EQ(m.records[0].label, "refund");
  EXPECT_TRUE(m.records[0].rejected.empty());
  EXPECT_EQ(m.records[1].label, "exchange");
  EXPECT_EQ(m.records[2].label, "");
  EXPECT_EQ(m.records[2].rejected, "exchange");
  EXPECT_EQ(m.records[2].line, 4);
  EXPECT_EQ(m.records[2].text, "where is it");
}

TEST(FeedbackTest, AnUnfinishedLastLineIsLeftOutAndListed) {
  TempDir dir;
  const std::string good =
      "{\"text\": \"send it back\", \"predicted\": \"refund\", \"reaction\": \"accepted\"}\n";
  const auto path = dir.write("torn.jsonl", good + good + "{\"text\": \"where is it\", \"predic");
  const FeedbackLog log = read_feedback(path, labels(), text_only());
  EXPECT_EQ(log.records.size(), 2u);
  ASSERT_EQ(log.skipped.size(), 1u);
  EXPECT_NE(log.skipped[0].find(path + ":3: an unfinished last line"), std::string::npos) << log.skipped[0];
  // A complete last record without its newline is kept; a bad line in the middle is an error.
  const auto unterminated = dir.write("unterminated.jsonl", good + good.substr(0, good.size() - 1));
  const FeedbackLog kept = read_feedback(unterminated, labels(), text_only());
  EXPECT_EQ(kept.records.size(), 2u);
  EXPECT_TRUE(kept.skipped.empty());
  const auto middle = dir.write("middle.jsonl", good + "{\"text\": \"wher\n" + good);
  EXPECT_THROW(read_feedback(middle, labels(), text_only()), DataError);
}

TEST(FeedbackTest, BadRecordsAreDataErrorsNamingFileAndLine) {
  TempDir dir;
  const std::string good = "{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"accepted\"}\n";
  struct Case {
    std::string line, message;
  };
  const std::vector<Case> cases = {
      {"{\"text\": \"x\", \"predicted\": \"refunds\", \"reaction\": \"accepted\"}",
       "predicted intent 'refunds' is not in the run's label map"},
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"corrected\", \"corrected_to\": \"swap\"}",
       "corrected_to intent 'swap' is not in the run's label map"},
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"corrected\"}",
       "needs the field 'corrected_to'"},
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"corrected\", \"corrected_to\": \"refund\"}",
       "'corrected_to' equals 'predicted'"},
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"accepted\", \"corrected_to\": \"track\"}",
       "field 'corrected_to' is only for reaction 'corrected'"},
      {"{\"text\": \"x\", \"predicted\": \"refund\"}", "missing field 'reaction'"},
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"liked\"}",
       "reaction 'liked' is not one of accepted, corrected, rejected"},
      {"{\"text\": \"x\", \"reaction\": \"rejected\"}", "missing field 'predicted'"},
      {"{\"text\": \"x\", \"predicted\": 3, \"reaction\": \"accepted\"}",
       "field 'predicted' must be a string, found number"},
      {"{\"predicted\": \"refund\", \"reaction\": \"accepted\"}", "missing field 'text'"},
      {"{\"text\": \"  \", \"predicted\": \"refund\", \"reaction\": \"accepted\"}", "empty text"},
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"accepted\"", "not valid JSON"},
      // A number beyond a double: nlohmann's out_of_range, not a parse_error.
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"accepted\", \"score\": 1e999}",
       "not valid JSON"},
      {"[1, 2]", "expected a JSON object, found array"},
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"accepted\", \"propensity\": 0}",
       "field 'propensity' must be in (0, 1]"},
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"accepted\", \"propensity\": 1.5}",
       "field 'propensity' must be in (0, 1]"},
      {"{\"text\": \"x\", \"predicted\": \"refund\", \"reaction\": \"accepted\", \"propensity\": \"0.5\"}",
       "field 'propensity' must be a number, found string"},
  };
  for (const auto& c : cases) {
    const auto path = dir.write("fb.jsonl", good + c.line + "\n" + good);
    expect_data_error([&] { read_feedback(path, labels(), text_only()); }, path, 2, {c.message});
  }
  // A model that uses images needs them.
  const auto no_image = dir.write("img.jsonl", good);
  expect_data_error([&] { read_feedback(no_image, labels()); }, no_image, 1, {"missing field 'image'"});
  FeedbackReadOptions allow;
  allow.allow_missing_image = true;
  EXPECT_EQ(read_feedback(no_image, labels(), allow).records.size(), 1u);

  const auto empty = dir.write("empty.jsonl", "\n  \n");
  expect_data_error([&] { read_feedback(empty, labels(), text_only()); }, empty, 0,
                    {"the feedback log has no records"});
  const auto missing = (dir.path() / "nope.jsonl").string();
  expect_data_error([&] { read_feedback(missing, labels(), text_only()); }, missing, 0, {"file not found"});
}

TEST(FeedbackTest, DatasetKeepsRejectionsAsLabelLessSamples) {
  TempDir dir;
  const auto path = dir.write("fb.jsonl",
                              "{\"text\": \"a\", \"predicted\": \"refund\", \"reaction\": \"accepted\"}\n"
                              "{\"text\": \"b\", \"predicted\": \"track\", \"reaction\": \"rejected\"}\n"
                              "{\"text\": \"c\", \"predicted\": \"track\", \"reaction\": \"corrected\", "
                              "\"corrected_to\": \"exchange\"}\n");
  MultimodalDataset d(feedback_manifest(read_feedback(path, labels(), text_only())), &labels(), nullptr,
                      no_modalities());
  ASSERT_EQ(d.size(), 3);
  EXPECT_EQ(d.label(0), 1);
  EXPECT_EQ(d.label(1), -1);
  EXPECT_EQ(d.rejected(1), 2);
  EXPECT_EQ(d.label(2), 0);
  auto b = d.collate({0, 1, 2}, nullptr, 0);
  EXPECT_TRUE(b.labels.equal(torch::tensor({1, -1, 0}, torch::kLong)));
  ASSERT_TRUE(b.rejected.defined());
  EXPECT_TRUE(b.rejected.equal(torch::tensor({-1, 2, -1}, torch::kLong)));
  EXPECT_FALSE(d.collate({0, 2}, nullptr, 0).rejected.defined());
}

TEST(FeedbackTest, PropensitiesBecomeShownIntentsOfTheBatch) {
  TempDir dir;
  const auto path = dir.write("fb.jsonl",
                              "{\"text\": \"a\", \"predicted\": \"refund\", \"reaction\": \"accepted\", \"propensity\": 0.9}\n"
                              "{\"text\": \"b\", \"predicted\": \"track\", \"reaction\": \"rejected\", \"propensity\": 0.02}\n"
                              "{\"text\": \"c\", \"predicted\": \"track\", \"reaction\": \"corrected\", "
                              "\"corrected_to\": \"exchange\", \"propensity\": 1}\n"
                              "{\"text\": \"d\", \"predicted\": \"track\", \"reaction\": \"accepted\"}\n");
  const auto log = read_feedback(path, labels(), text_only());
  EXPECT_EQ(log.with_propensity, 3);
  EXPECT_DOUBLE_EQ(log.records[1].propensity, 0.02);
  EXPECT_EQ(log.records[3].propensity, 0);
  MultimodalDataset d(feedback_manifest(log), &labels(), nullptr, no_modalities());
  auto b = d.collate({0, 1, 2, 3}, nullptr, 0);
  EXPECT_TRUE(b.labels.equal(torch::tensor({1, -1, 0, 2}, torch::kLong)));
  ASSERT_TRUE(b.shown.defined());
  EXPECT_TRUE(b.shown.equal(torch::tensor({1, 2, 2, -1}, torch::kLong)));
  EXPECT_TRUE(b.propensity.allclose(torch::tensor({0.9f, 0.02f, 1.0f, 0.0f})));
  EXPECT_FALSE(d.collate({3}, nullptr, 0).shown.defined());
  // Mixed with a part that has none (a replay batch): -1 and 0 there.
  auto mixed = concat_batches({d.collate({0}, nullptr, 0), d.collate({3}, nullptr, 0)});
  EXPECT_TRUE(mixed.shown.equal(torch::tensor({1, -1}, torch::kLong)));
  EXPECT_TRUE(mixed.propensity.allclose(torch::tensor({0.9f, 0.0f})));
}

TEST(FeedbackTest, HoldOutSplitKeepsRepeatsTogetherAndDependsOnlyOnTheSeed) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 400; ++i) {
    const int q = i % 100;  // 100 distinct requests, each asked 4 times
    text += "{\"text\": \"request " + std::to_string(q) + "\", \"predicted\": \"refund\", \"reaction\": \"" +
            (i % 2 ? "accepted" : "rejected") + "\", \"propensity\": 0.5}\n";
  }
  const auto log = read_feedback(dir.write("fb.jsonl", text), labels(), text_only());
  const auto a = split_feedback(log, 0.25, 7), b = split_feedback(log, 0.25, 7), c = split_feedback(log, 0.25, 8);
  ASSERT_EQ(a.kept.records.size() + a.held_out.records.size(), 400u);
  EXPECT_EQ(a.held_out.records.size(), b.held_out.records.size());
  std::set<std::string> held, kept;
  for (const auto& r : a.held_out.records) held.insert(r.text);
  for (const auto& r : a.kept.records) kept.insert(r.text);
  for (const auto& t : held) EXPECT_EQ(kept.count(t), 0u) << t << " is on both sides";
  EXPECT_EQ(a.held_out.records.size(), 4 * held.size());
  // About a quarter of the distinct requests (binomial, n = 100: 10 to 40 is > 4 sd).
  EXPECT_GE(held.size(), 10u);
  EXPECT_LE(held.size(), 40u);
  EXPECT_EQ(a.held_out.accepted + a.held_out.rejected, static_cast<int64_t>(a.held_out.records.size()));
  EXPECT_EQ(a.held_out.with_propensity, static_cast<int64_t>(a.held_out.records.size()));
  std::set<std::string> held_c;
  for (const auto& r : c.held_out.records) held_c.insert(r.text);
  EXPECT_NE(held, held_c);  // another seed, another draw
  EXPECT_TRUE(split_feedback(log, 0, 7).held_out.records.empty());
  EXPECT_THROW(split_feedback(log, 1, 7), Error);
}

/// A data set of `n` label-only samples, all labelled `label`.
std::shared_ptr<const MultimodalDataset> label_dataset(const TempDir& dir, const std::string& name,
                                                        int n, const std::string& label) {
  std::string text;
  for (int i = 0; i < n; ++i) text += "{\"label\": \"" + label + "\"}\n";
  ManifestReadOptions o;
  o.fields.text = "";
  o.fields.image = "";
  return std::make_shared<MultimodalDataset>(read_manifest(dir.write(name, text), o), &labels(),
                                             nullptr, no_modalities());
}

TEST(FeedbackTest, ReplaySourceMixesEveryFeedbackSampleWithAFreshReplayDraw) {
  TempDir dir;
  auto feedback = label_dataset(dir, "f.jsonl", 10, "exchange");  // class 0
  auto replay = label_dataset(dir, "r.jsonl", 50, "track");       // class 2
  FeedbackReplayOptions o;
  o.batch_size = 8;
  o.replay_ratio = 1.5;
  o.seed = 3;
  FeedbackReplaySource source(feedback, replay, o);
  EXPECT_EQ(source.replay_per_pass(), 15);
  EXPECT_EQ(source.num_samples(), 25);
  EXPECT_EQ(source.num_batches(), 4);
  EXPECT_EQ(source.batch_size_at(3), 1);

  std::vector<std::set<int64_t>> drawn;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    source.start_epoch(epoch);
    int64_t samples = 0, feedback_seen = 0, batches = 0;
    bool mixed = false;
    while (auto b = source.next()) {
      EXPECT_EQ(b->size(), source.batch_size_at(batches));
      const auto n_feedback = b->labels.eq(0).sum().item<int64_t>();
      mixed = mixed || (n_feedback > 0 && n_feedback < b->size());
      feedback_seen += n_feedback;
      samples += b->size();
      ++batches;
    }
    EXPECT_EQ(batches, 4);
    EXPECT_EQ(samples, 25);
    EXPECT_EQ(feedback_seen, 10);  // every feedback sample once per pass
    EXPECT_TRUE(mixed);
    std::set<int64_t> replayed;
    for (const auto& [src, i] : source.order(epoch)) {
      if (src == 1) replayed.insert(i);
    }
    EXPECT_EQ(replayed.size(), 15u);  // without replacement
    drawn.push_back(replayed);
  }
  EXPECT_NE(drawn[0], drawn[1]);  // a fresh draw each pass
  EXPECT_EQ(source.order(1), FeedbackReplaySource(feedback, replay, o).order(1));  // deterministic

  // More replay than training data cycles through it; ratio 0 (or no replay set) is feedback only.
  o.replay_ratio = 12;
  FeedbackReplaySource big(feedback, replay, o);
  std::map<int64_t, int> counts;
  for (const auto& [src, i] : big.order(0)) {
    if (src == 1) ++counts[i];
  }
  EXPECT_EQ(counts.size(), 50u);
  for (const auto& [i, c] : counts) EXPECT_GE(c, 2) << i;
  o.replay_ratio = 0;
  EXPECT_EQ(FeedbackReplaySource(feedback, replay, o).num_samples(), 10);
  o.replay_ratio = 1;
  EXPECT_EQ(FeedbackReplaySource(feedback, nullptr, o).num_samples(), 10);
  EXPECT_THROW(FeedbackReplaySource(nullptr, replay, o), Error);
}

}  // namespace
TEST(FeedbackTest, ReplayKeepsTheTrainingClassMixWhenTheFeedbackLacksAClass) {
  TempDir dir;
  // Feedback: 10 samples, all "exchange" (class 0). Training data: half "exchange", half "track".
  auto feedback = label_dataset(dir, "f.jsonl", 10, "exchange");
  std::string text;
  for (int i = 0; i < 40; ++i) text += std::string("{\"label\": \"") + (i % 2 ? "track" : "exchange") + "\"}\n";
  ManifestReadOptions ro;
  ro.fields.text = "";
  ro.fields.image = "";
  auto replay = std::make_shared<const MultimodalDataset>(read_manifest(dir.write("r.jsonl", text), ro),
                                                          &labels(), nullptr, no_modalities());
  FeedbackReplayOptions o;
  o.replay_ratio = 1.0;
  o.seed = 5;
  o.keep_class_mix = true;
  // A pass of 20 at the training mix has 10 of each: the feedback brings 10 exchange, so all 10
  // replayed samples are "track".
  FeedbackReplaySource mixed(feedback, replay, o);
  EXPECT_EQ(mixed.replay_per_class(), (std::vector<int64_t>{0, 0, 10, 0}));
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::set<int64_t> drawn;
    for (const auto& [src, j] : mixed.order(epoch)) {
      if (src != 1) continue;
      EXPECT_EQ(replay->label(j), 2) << j;
      drawn.insert(j);
    }
    EXPECT_EQ(drawn.size(), 10u);  // without replacement
  }
  // Fractional deficits: largest remainders, summing to the replay count.
  o.replay_ratio = 0.7;  // 7 replayed; pass 17: targets 8.5 / 8.5, deficits 0 / 8.5
  EXPECT_EQ(FeedbackReplaySource(feedback, replay, o).replay_per_class(), (std::vector<int64_t>{0, 0, 7, 0}));
  o.replay_ratio = 3;  // 30 replayed; pass 40: targets 20 / 20, deficits 10 / 20 -> 10 / 20
  EXPECT_EQ(FeedbackReplaySource(feedback, replay, o).replay_per_class(), (std::vector<int64_t>{10, 0, 20, 0}));
  // The uniform draw ignores the classes.
  o.keep_class_mix = false;
  EXPECT_TRUE(FeedbackReplaySource(feedback, replay, o).replay_per_class().empty());
  int64_t track = 0;
  for (const auto& [src, j] : FeedbackReplaySource(feedback, replay, o).order(0)) {
    if (src == 1) track += replay->label(j) == 2;
  }
  EXPECT_GT(track, 5);
  EXPECT_LT(track, 25);
}

}  // namespace mmintent
