// RNDADDENTROPY paths that need no privilege. The successful credit on the
// real /dev/random is in reseed_root_test.cc (needs CAP_SYS_ADMIN).
#include "agent/reseed.h"

#include "agent/tests/test_util.h"
#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

using testing::TempDir;

TEST(ReseedTest, IoctlOnARegularFileFailsAndIsReported) {
  TempDir dir;
  const std::string path = dir.Path("not-a-random-device");
  testing::WriteString(path, "");
  const auto s = CreditEntropy(path, std::string(32, 'e'));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("RNDADDENTROPY"), absl::string_view::npos) << s;
  // The failed ioctl must not have degraded into a plain write of the entropy.
  EXPECT_EQ(testing::ReadAll(path), "");
}

TEST(ReseedTest, RefusesFewerThan32Bytes) {
  TempDir dir;
  const std::string path = dir.Path("random");
  testing::WriteString(path, "");
  for (size_t n : {size_t{0}, size_t{1}, size_t{31}}) {
    const auto s = CreditEntropy(path, std::string(n, 'e'));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << n << ": " << s;
  }
}

TEST(ReseedTest, RefusesMoreThanTheMaximum) {
  const auto s = CreditEntropy("/nonexistent", std::string(kMaxEntropyBytes + 1, 'e'));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(ReseedTest, MissingDeviceIsReported) {
  TempDir dir;
  const auto s = CreditEntropy(dir.Path("missing"), std::string(32, 'e'));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
}

}  // namespace
}  // namespace forkd::agent
