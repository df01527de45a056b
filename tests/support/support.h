#pragma once
/// Shared test helpers: temporary directories, small file writers and a seeding fixture.

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace mmintent::test {

/// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  /// Writes `content` to path()/name (creating parent folders) and returns the full path.
  std::string write(const std::string& name, const std::string& content) const;
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

std::string read_file(const std::string& path);

/// The text of tests/fixtures/NAME (e.g. "configs/tune.yaml"). Needs MMINTENT_TEST_FIXTURES
/// (tests/CMakeLists.txt defines it for every test program).
std::string fixture_text(const std::string& name);

/// Seeds LibTorch (and sets 1 intra-op thread) before each test for determinism.
class SeededTest : public ::testing::Test {
 protected:
  void SetUp() override;
};

}  // namespace mmintent::test
