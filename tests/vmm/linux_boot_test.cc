// Tier 3: boot a real Linux kernel (bzImage or vmlinux) through the same
// 64-bit boot path. Needs hardware virtualization: on kvm_pvm hosts a stock
// kernel needs ~12 minutes and its user space cannot make system calls
// (docs/host-facts.md), so the binary skips there with that reason.
//
//   FORKD_LINUX_KERNEL=/path/bzImage [FORKD_LINUX_INITRD=/path/initramfs]
//   [FORKD_LINUX_EXPECT="Run /init"]  (default: "Linux version")
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/vmm/probe_harness.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kHwVirt);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kLinuxGuestKernel);

namespace forkd::vmm::testing {
namespace {

TEST(LinuxBoot, KernelReachesExpectedConsoleLine) {
  const char* kernel = std::getenv("FORKD_LINUX_KERNEL");  // checked by the requirement
  const char* initrd = std::getenv("FORKD_LINUX_INITRD");
  const char* expect = std::getenv("FORKD_LINUX_EXPECT");
  ProbeVm vm;
  BootConfig cfg;
  cfg.kernel_path = kernel;
  if (initrd != nullptr) cfg.initrd_path = initrd;
  cfg.cmdline = "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux";
  // Extra guest words for one tier (the emulated-SVM tier passes noxsave, docs/testing-tiers.md).
  if (const char* extra = std::getenv("FORKD_LINUX_CMDLINE_EXTRA"))
    cfg.cmdline += std::string(" ") + extra;
  cfg.mem_size = 512 << 20;
  cfg.vcpus = 2;
  cfg.serial = {vm.out->write_fd(), vm.in.read.get()};
  auto m = BuildForBoot(SharedKvm(), cfg);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE((*m)->Start().ok());
  EXPECT_TRUE(
      vm.out->WaitFor(expect ? expect : "Linux version", 0, std::chrono::seconds(120)).has_value())
      << vm.out->text();
  if (auto e = (*m)->exit()) ADD_FAILURE() << "VM ended: " << e->ToString();
  (*m)->Stop();
}

}  // namespace
}  // namespace forkd::vmm::testing
