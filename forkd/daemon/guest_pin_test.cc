#include "forkd/daemon/guest_pin.h"

#include <fstream>

#include "agent/protocol.h"
#include "gtest/gtest.h"
#include "kernel-stage/digest.h"
#include "kernel-stage/pinned_file.h"
#include "tests/support/temp_dir.h"

namespace forkd::daemon {
namespace {

namespace ks = forkd::kernel_stage;

// sha256("abc") and sha256("abcd")
constexpr char kAbc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr char kAbcd[] = "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589";

class GuestPinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_ = (tmp_.path() / "kernel").string();
    initrd_ = (tmp_.path() / "initrd").string();
    probe_ = (tmp_.path() / "probe").string();
    std::ofstream(kernel_) << "abc";
    std::ofstream(initrd_) << "abcd";
    std::ofstream(probe_) << "probe";
    flags_.kernel = kernel_;
    flags_.kernel_sha256 = kAbc;
    flags_.initrd = initrd_;
    flags_.initrd_sha256 = kAbcd;
    flags_.probe_guest = probe_;
  }
  forkd::testing::TempDir tmp_{"forkd_pin"};
  std::string kernel_, initrd_, probe_;
  Flags flags_;
};

TEST_F(GuestPinTest, MatchingDigestsOpenAndAreWhatRestoresExpect) {
  auto g = OpenGuestPin(flags_);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->kernel_hex(), kAbc);
  EXPECT_EQ((*g)->initrd_hex(), kAbcd);
  auto linux_pin = (*g)->ExpectedPin("linux");
  ASSERT_TRUE(linux_pin.ok()) << linux_pin.status();
  EXPECT_EQ(ks::HexDigest(linux_pin->kernel_sha256), kAbc);
  EXPECT_EQ(ks::HexDigest(linux_pin->initrd_sha256), kAbcd);
  EXPECT_EQ(linux_pin->agent_protocol, agent::kProtocolVersion);
  EXPECT_FALSE(linux_pin->unpinned);
  // The probe guest: its own digest, no initramfs.
  auto probe_pin = (*g)->ExpectedPin("probe");
  ASSERT_TRUE(probe_pin.ok()) << probe_pin.status();
  EXPECT_EQ(probe_pin->kernel_sha256, *ks::HashFile(probe_));
  EXPECT_EQ(probe_pin->initrd_sha256, ks::EmptySha256());
  // Upper case is the same digest.
  std::string upper(kAbc);
  for (auto& c : upper) c = static_cast<char>(std::toupper(c));
  flags_.kernel_sha256 = upper;
  EXPECT_TRUE(OpenGuestPin(flags_).ok());
}

TEST_F(GuestPinTest, WrongDigestIsRefusedNamingBoth) {
  flags_.kernel_sha256 = kAbcd;  // the initrd's digest: wrong for the kernel
  auto g = OpenGuestPin(flags_);
  ASSERT_EQ(g.status().code(), absl::StatusCode::kFailedPrecondition) << g.status();
  EXPECT_TRUE(ks::IsPinMismatch(g.status()));
  EXPECT_NE(g.status().message().find(kAbc), std::string_view::npos) << g.status();
  EXPECT_NE(g.status().message().find(kAbcd), std::string_view::npos) << g.status();
  EXPECT_NE(g.status().message().find(kernel_), std::string_view::npos) << g.status();
  // The initramfs likewise.
  flags_.kernel_sha256 = kAbc;
  flags_.initrd_sha256 = kAbc;
  EXPECT_EQ(OpenGuestPin(flags_).status().code(), absl::StatusCode::kFailedPrecondition);
  // Malformed, unreadable.
  flags_.initrd_sha256 = "xyz";
  EXPECT_EQ(OpenGuestPin(flags_).status().code(), absl::StatusCode::kInvalidArgument);
  flags_.initrd_sha256 = kAbcd;
  flags_.kernel = (tmp_.path() / "none").string();
  EXPECT_FALSE(OpenGuestPin(flags_).ok());
}

TEST_F(GuestPinTest, BuildReverifiesThroughTheCache) {
  auto g = OpenGuestPin(flags_);
  ASSERT_TRUE(g.ok()) << g.status();
  const int opened = (*g)->hash_count();
  ASSERT_TRUE((*g)->VerifyForBuild(true).ok());
  ASSERT_TRUE((*g)->VerifyForBuild(false).ok());
  EXPECT_EQ((*g)->hash_count(), opened) << "unchanged files are not re-hashed";
  // The kernel replaced: refused with both digests, the probe build unaffected.
  std::ofstream(kernel_) << "abcd";
  absl::Status s = (*g)->VerifyForBuild(true);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find(kAbc), std::string_view::npos) << s;
  EXPECT_NE(s.message().find(kAbcd), std::string_view::npos) << s;
  EXPECT_TRUE((*g)->VerifyForBuild(false).ok());
  // Put back: accepted again (positive control).
  std::ofstream(kernel_) << "abc";
  EXPECT_TRUE((*g)->VerifyForBuild(true).ok());
  // The probe replaced: probe builds refused.
  std::ofstream(probe_) << "other probe";
  EXPECT_EQ((*g)->VerifyForBuild(false).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(GuestPinTest, WaiverTakesTheDigestsWithoutChecking) {
  flags_.kernel_sha256.clear();
  flags_.initrd_sha256.clear();
  flags_.insecure_skip_guest_verify = true;
  auto g = OpenGuestPin(flags_);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE((*g)->insecure_skip_guest_verify());
  EXPECT_EQ((*g)->kernel_hex(), kAbc);
  std::ofstream(kernel_) << "abcd";
  EXPECT_TRUE((*g)->VerifyForBuild(true).ok());
}

TEST_F(GuestPinTest, UnreadableProbeRefusesProbeBuildsOnly) {
  flags_.probe_guest = (tmp_.path() / "no-probe").string();
  auto g = OpenGuestPin(flags_);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_FALSE((*g)->VerifyForBuild(false).ok());
  EXPECT_FALSE((*g)->ExpectedPin("probe").ok());
  EXPECT_TRUE((*g)->VerifyForBuild(true).ok());
}

}  // namespace
}  // namespace forkd::daemon
