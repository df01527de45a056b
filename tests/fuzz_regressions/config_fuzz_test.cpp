// Regressions found by fuzz/fuzz_config (scripts/fuzz.sh): inputs that made the config loader
// or writer throw something other than mmintent's own errors.
#include "mmintent/config/loader.h"
#include "mmintent/error.h"
#include "support/support.h"

#include <gmock/gmock.h>

#include <string>
#include <vector>

namespace mmintent {
namespace {

using ::testing::HasSubstr;

class ConfigFuzzRegressionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"train.jsonl", "val.jsonl", "test.jsonl"}) dir_.write(name, "\n");
  }
  std::string origin() const { return (dir_.path() / "cfg.yaml").string(); }
  static std::string base() {
    return "data: {train: train.jsonl, val: val.jsonl, test: test.jsonl}\n";
  }
  test::TempDir dir_;
};

// A mapping, list or null used as a key made finish() call as<std::string>() on it, which threw
// YAML::TypedBadConversion out of parse_config.
TEST_F(ConfigFuzzRegressionTest, ComplexKeyIsAConfigError) {
  for (const std::string& section : std::vector<std::string>{
           "data:\n  train: train.jsonl\n  val: val.jsonl\n  test: test.jsonl\n  ? {a: 1}\n  : 2\n",
           base() + "? [x, y]\n: 1\n", base() + "model:\n  ~: 3\n"}) {
    try {
      parse_config(section, origin());
      ADD_FAILURE() << "no ConfigError for:\n" << section;
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), HasSubstr("expected a key name, found")) << section;
      EXPECT_GT(e.line(), 0) << section;
    }
  }
}

// A subnormal number (valid, in range) made to_yaml() throw std::out_of_range from std::stod
// while looking for the shortest text of the value, so a run could not save its config.
TEST_F(ConfigFuzzRegressionTest, SubnormalNumberIsWrittenAndReadBack) {
  const Config config = parse_config(base() + "train: {grad_clip: 1e-310}\n", origin());
  EXPECT_DOUBLE_EQ(config.train.grad_clip, 1e-310);
  std::string written;
  ASSERT_NO_THROW(written = to_yaml(config));
  const Config again = parse_config(written, origin());
  EXPECT_EQ(again.train.grad_clip, config.train.grad_clip);
  EXPECT_EQ(to_yaml(again), written);
}

}  // namespace
}  // namespace mmintent
