#include "kernel-stage/guest_pin.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "common/errno_status.h"
#include "kernel-stage/pinned_file.h"

#include "common/errno_status.h"
#include "kernel-stage/pinned_file.h"

namespace forkd::kernel_stage {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

GuestPin Pin(std::string_view kernel, std::string_view initrd, uint32_t proto) {
  return GuestPin{
      .kernel_sha256 = Sha256({reinterpret_cast<const uint8_t*>(kernel.data()), kernel.size()}),
      .initrd_sha256 = Sha256({reinterpret_cast<const uint8_t*>(initrd.data()), initrd.size()}),
      .agent_protocol = proto};
}

TEST(GuestPinTest, SamePinPasses) {
  EXPECT_TRUE(CheckPin(Pin("k", "i", 1), Pin("k", "i", 1)).ok());
}

TEST(GuestPinTest, OtherKernelIsRefusedNamingBothDigests) {
  const GuestPin want = Pin("k", "i", 1), got = Pin("k2", "i", 1);
  absl::Status st = CheckPin(want, got);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsPinMismatch(st));
  EXPECT_TRUE(IsPinMismatch(Annotate(st, "restore /snap")));  // context keeps the mark
  EXPECT_FALSE(IsPinMismatch(absl::FailedPreconditionError("other CPU")));
  EXPECT_THAT(
      std::string(st.message()),
      AllOf(HasSubstr(HexDigest(want.kernel_sha256)), HasSubstr(HexDigest(got.kernel_sha256)),
            HasSubstr("kernel"), Not(HasSubstr("initrd SHA-256"))));
}

TEST(GuestPinTest, OtherInitrdAndProtocolAreEachNamed) {
  const GuestPin want = Pin("k", "i", 1), got = Pin("k", "i2", 2);
  absl::Status st = CheckPin(want, got);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      std::string(st.message()),
      AllOf(HasSubstr(HexDigest(want.initrd_sha256)), HasSubstr(HexDigest(got.initrd_sha256)),
            HasSubstr("agent protocol 2 is not the expected 1")));
}

TEST(GuestPinTest, UnpinnedSnapshotIsRefusedEvenWithTheSameDigests) {
  GuestPin got = Pin("k", "i", 1);
  got.unpinned = true;
  absl::Status st = CheckPin(Pin("k", "i", 1), got);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(st.message()), HasSubstr("unpinned"));
  got.unpinned = false;  // positive control
  EXPECT_TRUE(CheckPin(Pin("k", "i", 1), got).ok());
}

TEST(GuestPinTest, ExpectationMustBePinned) {
  GuestPin want = Pin("k", "i", 1);
  want.unpinned = true;
  EXPECT_EQ(CheckPin(want, Pin("k", "i", 1)).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace forkd::kernel_stage
