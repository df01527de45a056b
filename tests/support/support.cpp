#include "support/support.h"

#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <atomic>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

namespace mmintent::test {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          ("mmintent_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  const auto p = path_ / name;
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << content;
  return p.string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

std::string fixture_text(const std::string& name) {
  const auto path = std::filesystem::path(MMINTENT_TEST_FIXTURES) / name;
  if (!std::filesystem::is_regular_file(path)) {
    throw std::runtime_error("test fixture " + path.string() + " is missing");
  }
  return read_file(path.string());
}

void SeededTest::SetUp() {
  torch::manual_seed(0);
  at::set_num_threads(1);
}

}  // namespace mmintent::test
