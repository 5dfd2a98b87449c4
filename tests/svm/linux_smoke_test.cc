// Tier 3 smoke test: the guest kernel (FORKD_LINUX_KERNEL, e.g. Debian's stock
// cloud kernel in the emulated-SVM tier, docs/testing-tiers.md) boots under
// forkd-vmm with the agent initramfs to user space, is snapshotted, and a
// restored fork keeps running user space. It needs no virtio device in the
// guest, so it passes on a stock kernel that cannot find them yet:
//   - user space: the agent (/init) forks its server, which writes a line
//     starting "forkd-agent: " to the console (its banner when vsock works,
//     its error when the kernel has no vsock device); either is a user-space
//     process making system calls;
//   - after restore: when the parent served vsock, the fork's agent answers
//     Ping; otherwise the fork's init restarts its server (once a second) and
//     the new server writes its line again, on the fork's own console.
// Prints "RESULT linux_smoke boot_ms=<n> restore_ms=<n>": cold boot to the
// user-space line and restore to READY, measured in the same run (the
// emulated tier reports only their ratio).
// FORKD_LINUX_CMDLINE_EXTRA is appended to the guest command line (the
// emulated tier passes noxsave).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "agent/client.h"
#include "agent/protocol.h"
#include "agent/vsock_connect.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/vmm/vmm_process.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kHwVirt);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kLinuxGuestKernel);

namespace forkd::vmm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Hang guard only: under the emulated tier a stock kernel needs ~15 s of host
// time to reach user space, on hardware well under a second.
constexpr auto kUserSpaceGuard = std::chrono::milliseconds(600s);
constexpr auto kCallDeadline = 10s;
constexpr char kUserSpaceLine[] = "forkd-agent: ";

std::string GuestCmdline() {
  std::string cmdline = "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux";
  if (const char* extra = std::getenv("FORKD_LINUX_CMDLINE_EXTRA"); extra != nullptr) {
    cmdline += " ";
    cmdline += extra;
  }
  return cmdline;
}

long long MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

class LinuxSmokeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("forkd_linux_smoke." + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

TEST_F(LinuxSmokeTest, BootsToUserSpaceAndRestoredForkKeepsRunning) {
  const fs::path snap = dir_ / "snap";
  const std::string parent_uds = (dir_ / "parent.sock").string();
  const char* kernel = std::getenv("FORKD_LINUX_KERNEL");  // checked by the requirement
  ASSERT_NE(kernel, nullptr);
  bool serving = false;
  long long boot_ms = 0;
  {
    const auto start = Clock::now();
    auto vm = VmmProcess::Spawn({"--kernel", kernel, "--initrd", FORKD_AGENT_INITRAMFS_PATH,
                                 "--cmdline", GuestCmdline(), "--mem-mib", "256", "--virtio-rng",
                                 "--vsock-cid", "3", "--vsock-uds", parent_uds});
    ASSERT_TRUE(vm.ok()) << vm.status();
    ASSERT_EQ((*vm)->ReadLine(), "READY");
    ASSERT_TRUE((*vm)->serial().WaitFor(kUserSpaceLine, 0, kUserSpaceGuard).has_value())
        << "the guest never reached user space; serial:\n"
        << (*vm)->serial().text();
    boot_ms = MsSince(start);
    const std::string text = (*vm)->serial().text();
    // Kernel-side proof that the line came from /init's process tree.
    EXPECT_NE(text.find("Run /init as init process"), std::string::npos) << text;
    serving = text.find("serving protocol") != std::string::npos;
    const absl::Status saved = (*vm)->SnapshotAndStop(snap.string());
    ASSERT_TRUE(saved.ok()) << saved << "\nserial:\n" << (*vm)->serial().text();
  }

  const std::string fork_uds = (dir_ / "fork.sock").string();
  const auto restore_start = Clock::now();
  auto fork = VmmProcess::Spawn({"--restore", snap.string(), "--vsock-uds", fork_uds});
  ASSERT_TRUE(fork.ok()) << fork.status();
  ASSERT_EQ((*fork)->ReadLine(), "READY");
  const long long restore_ms = MsSince(restore_start);

  if (serving) {
    auto fd = agent::ConnectVsockMux(fork_uds, agent::kDefaultVsockPort,
                                     agent::DeadlineIn(kCallDeadline));
    ASSERT_TRUE(fd.ok()) << fd.status();
    agent::AgentClient client(std::move(*fd));
    auto pong = client.Ping(agent::DeadlineIn(kCallDeadline));
    EXPECT_TRUE(pong.ok()) << pong.status() << "\nserial:\n" << (*fork)->serial().text();
  } else {
    // The fork's console starts empty: any agent line on it was written after
    // the restore, by the restored guest's user space.
    EXPECT_TRUE((*fork)->serial().WaitFor(kUserSpaceLine, 0, kUserSpaceGuard).has_value())
        << "the restored guest's user space wrote nothing; serial:\n"
        << (*fork)->serial().text();
  }
  (*fork)->Send("STOP");
  EXPECT_EQ((*fork)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*fork)->Wait(), 0);

  std::printf("RESULT linux_smoke boot_ms=%lld restore_ms=%lld vsock=%s\n", boot_ms, restore_ms,
              serving ? "served" : "absent");
}

}  // namespace
}  // namespace forkd::vmm::testing
