// SHA-256 (core/digest.h) against FIPS 180-4's examples, across block boundaries, and on files.

#include "mmintent/core/digest.h"
#include "mmintent/error.h"
#include "support/support.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace mmintent {
namespace {

TEST(DigestTest, Sha256MatchesTheStandardsExamples) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // 55, 56 and 64 bytes: the padding fits, just does not, and fills a block of its own.
  EXPECT_EQ(sha256_hex(std::string(55, 'x')), "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072");
  EXPECT_EQ(sha256_hex(std::string(56, 'x')), "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e");
  EXPECT_EQ(sha256_hex(std::string(64, 'x')), "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c");
}

TEST(DigestTest, FilesHashLikeTheirBytes) {
  test::TempDir dir;
  std::string bytes;
  for (int i = 0; i < 200000; ++i) bytes += static_cast<char>(i * 7919 % 251);
  const auto file = dir.path() / "weights.bin";
  std::ofstream(file, std::ios::binary) << bytes;
  EXPECT_EQ(sha256_file_hex(file), sha256_hex(bytes));
  EXPECT_THROW(sha256_file_hex(dir.path() / "missing.pt"), DataError);
  EXPECT_THROW(sha256_file_hex(dir.path()), DataError);
}

}  // namespace
}  // namespace mmintent
