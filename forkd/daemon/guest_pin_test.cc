#include "forkd/daemon/guest_pin.h"

#include <fstream>

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace forkd::daemon {
namespace {

// sha256("abc")
constexpr char kAbc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

TEST(GuestPinTest, MatchingDigestPassesAndOtherBytesAreRefused) {
  forkd::testing::TempDir tmp("forkd_pin");
  const std::string k = (tmp.path() / "kernel").string();
  std::ofstream(k) << "abc";
  auto ok = VerifyGuestPin("kernel", k, std::string(kAbc), false);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, kAbc);
  // Upper case is the same digest.
  std::string upper(kAbc);
  for (auto& c : upper) c = static_cast<char>(std::toupper(c));
  EXPECT_TRUE(VerifyGuestPin("kernel", k, upper, false).ok());
  // One byte more: refused, naming both digests.
  std::ofstream(k) << "abcd";
  auto bad = VerifyGuestPin("kernel", k, kAbc, false);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(bad.status().message().find(kAbc), std::string_view::npos);
  // Skipping verification returns the digest it did not check.
  EXPECT_TRUE(VerifyGuestPin("kernel", k, "", true).ok());
  EXPECT_EQ(VerifyGuestPin("kernel", k, "xyz", false).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(VerifyGuestPin("kernel", (tmp.path() / "none").string(), kAbc, false).ok());
}

}  // namespace
}  // namespace forkd::daemon
