#include "mmintent/data/tokenizer.h"

#include <torch/torch.h>

#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mmintent/error.h"
#include "support/support.h"

namespace mmintent {
namespace {

/// A few hundred short, deterministic sentences in lowercase ASCII.
std::vector<std::string> make_corpus() {
  const std::vector<std::string> verbs = {"book", "cancel", "show", "find", "play", "order"};
  const std::vector<std::string> things = {"a flight", "my alarm", "the weather", "a pizza",
                                           "some music", "a taxi", "the news", "a table"};
  const std::vector<std::string> places = {"to paris", "for tomorrow", "in london", "at noon",
                                           "near me", "for two people"};
  std::vector<std::string> corpus;
  for (const auto& v : verbs) {
    for (const auto& t : things) {
      for (const auto& p : places) corpus.push_back("please " + v + " " + t + " " + p);
    }
  }
  corpus.push_back("");  // Empty texts are skipped.
  corpus.push_back("what time is it now");
  corpus.push_back("quick brown fox jumps over the lazy dog");
  return corpus;
}

TokenizerTrainOptions small_options(const std::string& type = "unigram") {
  TokenizerTrainOptions options;
  options.vocab_size = 120;
  options.model_type = type;
  return options;
}

class TokenizerTest : public test::SeededTest {
 protected:
  Tokenizer train(const std::string& name, const std::string& type = "unigram") const {
    return Tokenizer::train(make_corpus(), (dir_.path() / name).string(), small_options(type));
  }
  test::TempDir dir_;
};

void expect_ids_in_range(const std::vector<int64_t>& ids, const Tokenizer& tok) {
  for (const int64_t id : ids) {
    EXPECT_GT(id, 0);
    EXPECT_LT(id, tok.vocab_size());
  }
}

TEST_F(TokenizerTest, TrainsWritesFilesAndEncodesIdsInRange) {
  const auto tok = train("spm");
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "spm.model"));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "spm.vocab"));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "spm.corpus.txt"));
  EXPECT_EQ(tok.model_path(), (dir_.path() / "spm.model").string());
  EXPECT_GT(tok.vocab_size(), 10);
  EXPECT_LE(tok.vocab_size(), 121);

  const auto ids = tok.encode("please book a flight to paris");
  ASSERT_FALSE(ids.empty());
  expect_ids_in_range(ids, tok);

  // LibTorch lives in the same process: the ids become an embedding lookup.
  const auto tensor = torch::tensor(ids, torch::kLong);
  EXPECT_EQ(tensor.size(0), static_cast<int64_t>(ids.size()));
  torch::nn::Embedding embed(torch::nn::EmbeddingOptions(tok.vocab_size(), 4).padding_idx(0));
  EXPECT_EQ(embed(tensor.unsqueeze(0)).sizes(), (std::vector<int64_t>{1, tensor.size(0), 4}));
}

TEST_F(TokenizerTest, RoundTripsText) {
  const auto tok = train("spm");
  for (const std::string text :
       {"please book a flight to paris", "show me the news in london", "a lazy fox plays music",
        "order a pizza for two people near me"}) {
    const auto ids = tok.encode(text);
    expect_ids_in_range(ids, tok);
    EXPECT_EQ(tok.decode(ids), text);
  }
}

TEST_F(TokenizerTest, DecodeSkipsPaddingAndRejectsOutOfRangeIds) {
  const auto tok = train("spm");
  auto ids = tok.encode("play some music");
  ids.insert(ids.begin(), 0);
  ids.push_back(0);
  ids.push_back(-1);
  EXPECT_EQ(tok.decode(ids), "play some music");
  EXPECT_EQ(tok.decode({0, 0}), "");
  EXPECT_EQ(tok.decode({}), "");
  EXPECT_THROW(tok.decode({tok.vocab_size()}), std::invalid_argument);
}

TEST_F(TokenizerTest, LoadedModelGivesIdenticalIds) {
  const auto trained = train("spm");
  const auto loaded = Tokenizer::load(trained.model_path());
  EXPECT_EQ(loaded.vocab_size(), trained.vocab_size());
  for (const auto& text : make_corpus()) EXPECT_EQ(loaded.encode(text), trained.encode(text));
}

TEST_F(TokenizerTest, TrainingIsDeterministic) {
  const auto first = train("a");
  const std::string model_a = test::read_file((dir_.path() / "a.model").string());
  const auto again = train("a");
  EXPECT_EQ(test::read_file((dir_.path() / "a.model").string()), model_a);

  // A different prefix only changes the paths recorded in the model, not the pieces.
  const auto other = train("b");
  EXPECT_EQ(test::read_file((dir_.path() / "b.vocab").string()),
            test::read_file((dir_.path() / "a.vocab").string()));
  for (const auto& text : make_corpus()) {
    EXPECT_EQ(again.encode(text), first.encode(text));
    EXPECT_EQ(other.encode(text), first.encode(text));
  }
}

TEST_F(TokenizerTest, MissingModelThrowsDataErrorNamingPath) {
  const std::string path = (dir_.path() / "nope.model").string();
  try {
    Tokenizer::load(path);
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.line(), 0);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::load(dir_.str()), DataError);  // A directory is not a model.
}

TEST_F(TokenizerTest, CorruptModelThrowsDataErrorNamingPath) {
  std::mt19937 rng(7);
  std::string bytes(4096, '\0');
  for (char& c : bytes) c = static_cast<char>(rng() & 0xff);
  for (const auto& [name, content] : std::vector<std::pair<std::string, std::string>>{
           {"random.model", bytes}, {"text.model", "this is not a model\n"}, {"empty.model", ""}}) {
    const std::string path = dir_.write(name, content);
    try {
      Tokenizer::load(path);
      FAIL() << "expected DataError for " << name;
    } catch (const DataError& e) {
      EXPECT_EQ(e.file(), path);
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

TEST_F(TokenizerTest, EmptyTextEncodesToEmptyVector) {
  const auto tok = train("spm");
  EXPECT_TRUE(tok.encode("").empty());
}

TEST_F(TokenizerTest, LongTextEncodes) {
  const auto tok = train("spm");
  std::string text;
  const auto corpus = make_corpus();
  for (size_t i = 0; text.size() < 100000; ++i) {
    const auto& s = corpus[i % corpus.size()];
    if (s.empty()) continue;
    if (!text.empty()) text += ' ';
    text += s;
  }
  text.resize(100000);
  if (text.back() == ' ') text.back() = 'a';
  const auto ids = tok.encode(text);
  ASSERT_GT(ids.size(), 1000u);
  expect_ids_in_range(ids, tok);
  EXPECT_EQ(tok.decode(ids), text);
}

TEST_F(TokenizerTest, OtherModelTypesTrain) {
  for (const std::string type : {"bpe", "word", "char"}) {
    const auto tok = train("spm_" + type, type);
    const auto ids = tok.encode("please order a taxi");
    ASSERT_FALSE(ids.empty()) << type;
    expect_ids_in_range(ids, tok);
    EXPECT_EQ(tok.decode(ids), "please order a taxi") << type;
  }
}

TEST_F(TokenizerTest, CopiesShareTheModelAcrossThreads) {
  const auto tok = train("spm");
  const auto corpus = make_corpus();
  std::vector<std::vector<int64_t>> expected;
  for (const auto& text : corpus) expected.push_back(tok.encode(text));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t, copy = tok] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < corpus.size(); ++i) {
          if (copy.encode(corpus[i]) != expected[i]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST_F(TokenizerTest, RejectsBadOptionsAndEmptyCorpus) {
  const std::string prefix = (dir_.path() / "bad").string();
  auto options = small_options();
  options.model_type = "wordpiece";
  EXPECT_THROW(Tokenizer::train(make_corpus(), prefix, options), std::invalid_argument);
  options = small_options();
  options.vocab_size = 0;
  EXPECT_THROW(Tokenizer::train(make_corpus(), prefix, options), std::invalid_argument);
  options = small_options();
  options.character_coverage = 1.5;
  EXPECT_THROW(Tokenizer::train(make_corpus(), prefix, options), std::invalid_argument);
  EXPECT_THROW(Tokenizer::train({"", "  ", "\n"}, prefix, small_options()), Error);
  EXPECT_FALSE(std::filesystem::exists(prefix + ".corpus.txt"));
}

}  // namespace
}  // namespace mmintent
