// Tier 2: the probe guest boots through the 64-bit entry path, runs, and
// ends with distinct statuses.
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/vmm/probe_harness.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);

namespace forkd::vmm::testing {
namespace {

TEST(ProbeBoot, ReachesReadyMarkerAndCounts) {
  auto vm = BootProbe("console=ttyS0 probe.report=64");
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto ready = vm->out->WaitFor("PROBE ready");
  ASSERT_TRUE(ready.has_value()) << "no marker; output: " << vm->out->text();
  ASSERT_TRUE(vm->out->WaitFor("PROBE count 2", *ready).has_value()) << vm->out->text();
  EXPECT_EQ(vm->out->text().find("PROBE fail"), std::string::npos) << vm->out->text();
  EXPECT_FALSE(vm->machine->exit().has_value());
  VmExit e = vm->machine->Stop();
  EXPECT_EQ(e.kind, ExitKind::kStopped) << e.ToString();
}

}  // namespace
}  // namespace forkd::vmm::testing

namespace forkd::vmm::testing {
namespace {

TEST(ProbeBoot, I8042ResetEndsVmWithResetStatus) {
  auto vm = BootProbe("probe.mode=reset");
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto e = vm->machine->WaitForExit(kHangGuard);
  ASSERT_TRUE(e.has_value()) << "VM did not end; output: " << vm->out->text();
  EXPECT_EQ(e->kind, ExitKind::kReset) << e->ToString();
  // The guest wrote this before the exit; the collector may still be reading it.
  EXPECT_TRUE(vm->out->WaitFor("PROBE ok reset-request").has_value()) << vm->out->text();
}

TEST(ProbeBoot, TripleFaultEndsVmWithShutdownStatus) {
  auto vm = BootProbe("probe.mode=triple");
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto e = vm->machine->WaitForExit(kHangGuard);
  ASSERT_TRUE(e.has_value()) << "VM did not end; output: " << vm->out->text();
  EXPECT_EQ(e->kind, ExitKind::kShutdown) << e->ToString();
  EXPECT_TRUE(vm->out->WaitFor("PROBE ok triple-request").has_value()) << vm->out->text();
  // Stop after the VM ended keeps the guest's status.
  EXPECT_EQ(vm->machine->Stop().kind, ExitKind::kShutdown);
}

TEST(ProbeBoot, SerialInputReachesGuest) {
  auto vm = BootProbe("probe.report=100000");
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->out->WaitFor("PROBE ready").has_value()) << vm->out->text();
  vm->in.Send("a");
  ASSERT_TRUE(vm->out->WaitFor("PROBE input 0x61").has_value()) << vm->out->text();
}

TEST(ProbeBoot, SecondaryVcpusWaitForSipiAndStopCleanly) {
  auto vm = BootProbe("probe.report=64", 64 << 20, 4);
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->out->WaitFor("PROBE count 1").has_value()) << vm->out->text();
  vm->machine->Pause();
  vm->machine->Resume();
  EXPECT_EQ(vm->machine->Stop().kind, ExitKind::kStopped);
}

TEST(ProbeBoot, RejectsBadConfig) {
  EXPECT_FALSE(BootProbe("", 64 << 20, 0).ok());
  EXPECT_FALSE(BootProbe("", 64 << 20, 5).ok());
  EXPECT_FALSE(BootProbe("", 1 << 20).ok());  // kernel does not fit
  EXPECT_FALSE(BootProbe("", (64 << 20) + 1).ok());
}

}  // namespace
}  // namespace forkd::vmm::testing
