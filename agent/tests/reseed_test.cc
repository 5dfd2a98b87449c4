// Reseed paths that need no privilege: argument checks, the real ioctl failing
// on a regular file, and the RNDADDENTROPY -> RNDRESEEDCRNG sequence through an
// injected ioctl. The real reseed of /dev/random is in reseed_root_test.cc
// (needs CAP_SYS_ADMIN).
#include "agent/reseed.h"

#include <linux/random.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "agent/protocol.h"
#include "agent/tests/test_util.h"
#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

using testing::TempDir;

TEST(ReseedTest, IoctlOnARegularFileFailsAndIsReported) {
  TempDir dir;
  const std::string path = dir.Path("not-a-random-device");
  testing::WriteString(path, "");
  const auto s = ReseedCrng(path, std::string(32, 'e'));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("RNDADDENTROPY"), absl::string_view::npos) << s;
  // The failed ioctl must not have degraded into a plain write of the entropy.
  EXPECT_EQ(testing::ReadAll(path), "");
}

// Records every call; fails the one whose request is `fail_request`.
struct FakeIoctl {
  struct Call {
    unsigned long request;
    int entropy_count = 0;
    std::string bytes;
  };
  std::vector<Call> calls;
  unsigned long fail_request = 0;

  RandomIoctl Fn() {
    return [this](int, unsigned long request, void* arg) {
      Call c{request};
      if (request == RNDADDENTROPY) {
        const auto* info = static_cast<const rand_pool_info*>(arg);
        c.entropy_count = info->entropy_count;
        c.bytes.assign(reinterpret_cast<const char*>(info->buf),
                       static_cast<size_t>(info->buf_size));
      }
      calls.push_back(c);
      if (request == fail_request) {
        errno = EPERM;
        return -1;
      }
      return 0;
    };
  }
};

TEST(ReseedTest, AddsTheEntropyThenForcesTheCrngReseed) {
  TempDir dir;
  const std::string path = dir.Path("random");
  testing::WriteString(path, "");
  FakeIoctl fake;
  const std::string entropy = "0123456789abcdef0123456789ABCDEF!";
  ASSERT_TRUE(ReseedCrng(path, entropy, fake.Fn()).ok());
  ASSERT_EQ(fake.calls.size(), 2u);
  EXPECT_EQ(fake.calls[0].request, static_cast<unsigned long>(RNDADDENTROPY));
  EXPECT_EQ(fake.calls[0].entropy_count, static_cast<int>(entropy.size() * 8));
  EXPECT_EQ(fake.calls[0].bytes, entropy);
  // Without this second call the CRNG key is replaced only at the next
  // scheduled reseed (Linux >= 5.18): forks would share output until then.
  EXPECT_EQ(fake.calls[1].request, static_cast<unsigned long>(RNDRESEEDCRNG));
}

TEST(ReseedTest, FailedAddEntropyIsReportedAndNothingElseIsTried) {
  TempDir dir;
  const std::string path = dir.Path("random");
  testing::WriteString(path, "");
  FakeIoctl fake;
  fake.fail_request = RNDADDENTROPY;
  const auto s = ReseedCrng(path, std::string(32, 'e'), fake.Fn());
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("RNDADDENTROPY"), absl::string_view::npos) << s;
  EXPECT_EQ(fake.calls.size(), 1u);
}

TEST(ReseedTest, FailedCrngReseedIsNotAReseed) {
  TempDir dir;
  const std::string path = dir.Path("random");
  testing::WriteString(path, "");
  FakeIoctl fake;
  fake.fail_request = RNDRESEEDCRNG;
  const auto s = ReseedCrng(path, std::string(32, 'e'), fake.Fn());
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("RNDRESEEDCRNG"), absl::string_view::npos) << s;
  ASSERT_EQ(fake.calls.size(), 2u);
  // And no plain write of the entropy as a fallback.
  EXPECT_EQ(testing::ReadAll(path), "");
}

TEST(ReseedTest, RefusesFewerThan32Bytes) {
  TempDir dir;
  const std::string path = dir.Path("random");
  testing::WriteString(path, "");
  for (size_t n : {size_t{0}, size_t{1}, size_t{31}}) {
    const auto s = ReseedCrng(path, std::string(n, 'e'));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << n << ": " << s;
  }
}

TEST(ReseedTest, RefusesMoreThanTheMaximum) {
  const auto s = ReseedCrng("/nonexistent", std::string(kMaxEntropyBytes + 1, 'e'));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(ReseedTest, MissingDeviceIsReported) {
  TempDir dir;
  const auto s = ReseedCrng(dir.Path("missing"), std::string(32, 'e'));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
}

}  // namespace
}  // namespace forkd::agent
