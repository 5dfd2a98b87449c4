// PinLoadedImages: the guest pin of a boot, computed from the bytes BuildForBoot loads (the kvm
// tier checks the same end to end in tests/vmm/guest_pin_test.cc).
#include <string>

#include "forkd/vmm/builder.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernel-stage/pinned_file.h"

namespace forkd::vmm {
namespace {

namespace ks = kernel_stage;
using ::testing::AllOf;
using ::testing::HasSubstr;

ks::Sha256Digest D(std::string_view s) {
  return ks::Sha256({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

TEST(PinLoadedImages, UnpinnedBootStillRecordsWhatWasLoaded) {
  BootConfig cfg;
  cfg.kernel_path = "/k";
  auto pin = PinLoadedImages(cfg, "kernel bytes", "");
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_TRUE(pin->unpinned);
  EXPECT_EQ(pin->kernel_sha256, D("kernel bytes"));
  EXPECT_EQ(pin->initrd_sha256, ks::EmptySha256());
  EXPECT_EQ(pin->agent_protocol, agent::kProtocolVersion);
}

TEST(PinLoadedImages, PinnedBootMatchesOrIsRefusedNamingBothDigests) {
  BootConfig cfg;
  cfg.kernel_path = "/k";
  cfg.initrd_path = "/i";
  cfg.agent_protocol = 9;
  cfg.expect_kernel_sha256 = D("kernel");
  cfg.expect_initrd_sha256 = D("initrd");
  auto pin = PinLoadedImages(cfg, "kernel", "initrd");  // positive control
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_FALSE(pin->unpinned);
  EXPECT_EQ(pin->agent_protocol, 9u);

  auto k = PinLoadedImages(cfg, "kernel!", "initrd");
  EXPECT_TRUE(ks::IsPinMismatch(k.status())) << k.status();
  EXPECT_THAT(std::string(k.status().message()),
              AllOf(HasSubstr("kernel /k"), HasSubstr("expected " + ks::HexDigest(D("kernel"))),
                    HasSubstr("actual " + ks::HexDigest(D("kernel!")))));
  auto i = PinLoadedImages(cfg, "kernel", "initrd!");
  EXPECT_TRUE(ks::IsPinMismatch(i.status())) << i.status();
  EXPECT_THAT(std::string(i.status().message()),
              AllOf(HasSubstr("initramfs /i"), HasSubstr("actual " + ks::HexDigest(D("initrd!")))));
}

TEST(PinLoadedImages, NoInitramfsIsTheDigestOfEmptyInput) {
  BootConfig cfg;
  cfg.kernel_path = "/k";
  cfg.expect_kernel_sha256 = D("kernel");
  cfg.expect_initrd_sha256 = ks::EmptySha256();
  EXPECT_TRUE(PinLoadedImages(cfg, "kernel", "").ok());
  cfg.expect_initrd_sha256 = D("initrd");  // pinned to an initramfs, booted without one
  EXPECT_TRUE(ks::IsPinMismatch(PinLoadedImages(cfg, "kernel", "").status()));
}

TEST(PinLoadedImages, HalfAPinIsAnError) {
  BootConfig cfg;
  cfg.kernel_path = "/k";
  cfg.initrd_path = "/i";
  cfg.expect_kernel_sha256 = D("kernel");  // initramfs loaded but not pinned
  EXPECT_EQ(PinLoadedImages(cfg, "kernel", "initrd").status().code(),
            absl::StatusCode::kInvalidArgument);
  cfg.expect_kernel_sha256.reset();
  cfg.expect_initrd_sha256 = D("initrd");  // initramfs pinned, kernel not
  EXPECT_EQ(PinLoadedImages(cfg, "kernel", "initrd").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace forkd::vmm
