// Tier 2: the forkd-vmm process: boot, control protocol, snapshot through
// the control fd, restore in a new process, exit statuses, bad input.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/vmm/vmm_process.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);

namespace forkd::vmm::testing {
namespace {

namespace fs = std::filesystem;

TEST(ForkdVmm, BootSnapshotRestoreInNewProcess) {
  const fs::path dir = fs::temp_directory_path() / ("forkd_vmm_test." + std::to_string(getpid()));
  auto src = VmmProcess::Spawn(
      {"--kernel", ProbeGuestPath(), "--cmdline", "probe.report=32", "--mem-mib", "64"});
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->ReadLine(), "READY");
  ASSERT_TRUE((*src)->serial().WaitFor("PROBE count 2").has_value());
  (*src)->Send("PAUSE");
  EXPECT_EQ((*src)->ReadLine(), "OK");
  (*src)->Send("SNAPSHOT " + dir.string());
  EXPECT_EQ((*src)->ReadLine(), "OK");
  (*src)->Send("BOGUS");
  EXPECT_EQ((*src)->ReadLine().value_or("").rfind("ERR unknown command", 0), 0u);
  (*src)->Send("STOP");
  EXPECT_EQ((*src)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*src)->Wait(), 0);

  auto fork = VmmProcess::Spawn({"--restore", dir.string()});
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ((*fork)->ReadLine(), "READY");
  (*fork)->input().Send("z");
  EXPECT_TRUE((*fork)->serial().WaitFor("PROBE input 0x7a").has_value())
      << (*fork)->serial().text();
  (*fork)->Send("STOP");
  EXPECT_EQ((*fork)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*fork)->Wait(), 0);
  fs::remove_all(dir);
}

// The binary's device flags: --virtio-rng and --vsock-cid/--vsock-uds at
// boot, --vsock-uds again for the restored process.
TEST(ForkdVmm, VirtioDevicesFromFlagsSurviveSnapshotInNewProcess) {
  const fs::path dir = fs::temp_directory_path() / ("forkd_vmm_virtio." + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string src_sock = (dir / "src.sock").string();
  auto src = VmmProcess::Spawn({"--kernel", ProbeGuestPath(), "--cmdline", "probe.scenario=rng",
                                "--mem-mib", "64", "--virtio-rng", "--vsock-cid", "9",
                                "--vsock-uds", src_sock});
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->ReadLine(), "READY");
  ASSERT_TRUE((*src)->serial().WaitFor("PROBE ok rng ").has_value()) << (*src)->serial().text();
  EXPECT_TRUE(fs::exists(src_sock));
  (*src)->Send("SNAPSHOT " + (dir / "snap").string());
  EXPECT_EQ((*src)->ReadLine(), "OK");
  (*src)->Send("STOP");
  EXPECT_EQ((*src)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*src)->Wait(), 0);
  EXPECT_FALSE(fs::exists(src_sock)) << "socket path left behind";

  // Without its own socket path the vsock snapshot does not restore.
  auto bad = VmmProcess::Spawn({"--restore", (dir / "snap").string()});
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_NE((*bad)->Wait(), 0);

  const std::string fork_sock = (dir / "fork.sock").string();
  auto fork = VmmProcess::Spawn({"--restore", (dir / "snap").string(), "--vsock-uds", fork_sock});
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ((*fork)->ReadLine(), "READY");
  (*fork)->input().Send("r");
  EXPECT_TRUE((*fork)->serial().WaitFor("PROBE ok rng ").has_value()) << (*fork)->serial().text();
  EXPECT_TRUE(fs::exists(fork_sock));
  (*fork)->Send("STOP");
  EXPECT_EQ((*fork)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*fork)->Wait(), 0);
  fs::remove_all(dir);
}

TEST(ForkdVmm, StandbyForkStartsOnGoAndContinuesCounter) {
  const fs::path dir =
      fs::temp_directory_path() / ("forkd_vmm_standby." + std::to_string(getpid()));
  auto src = VmmProcess::Spawn(
      {"--kernel", ProbeGuestPath(), "--cmdline", "probe.report=32", "--mem-mib", "64"});
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->ReadLine(), "READY");
  ASSERT_TRUE((*src)->serial().WaitFor("PROBE count 1").has_value());
  (*src)->Send("SNAPSHOT " + dir.string());  // pauses, saves, resumes
  EXPECT_EQ((*src)->ReadLine(), "OK");
  (*src)->Send("STOP");
  EXPECT_EQ((*src)->ReadLine(), "EXIT stopped: host request");

  auto standby = VmmProcess::Spawn({"--restore", dir.string(), "--standby"});
  ASSERT_TRUE(standby.ok()) << standby.status();
  EXPECT_EQ((*standby)->ReadLine(), "STANDBY");
  // Nothing runs before GO: the guest has not printed anything yet.
  EXPECT_EQ((*standby)->serial().DrainedText(), "");
  (*standby)->Send("GO");
  EXPECT_EQ((*standby)->ReadLine(), "READY");
  (*standby)->input().Send("p");
  EXPECT_TRUE((*standby)->serial().WaitFor("PROBE count").has_value());
  (*standby)->Send("STOP");
  EXPECT_EQ((*standby)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*standby)->Wait(), 0);
  fs::remove_all(dir);
}

TEST(ForkdVmm, ControlEofStopsTheVm) {
  auto p = VmmProcess::Spawn({"--kernel", ProbeGuestPath(), "--mem-mib", "64"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->ReadLine(), "READY");
  (*p)->CloseControl();
  EXPECT_EQ((*p)->Wait(), 0);
}

TEST(ForkdVmm, GuestResetAndTripleFaultReportDistinctExits) {
  auto reset = VmmProcess::Spawn(
      {"--kernel", ProbeGuestPath(), "--cmdline", "probe.mode=reset", "--mem-mib", "64"});
  ASSERT_TRUE(reset.ok());
  EXPECT_EQ((*reset)->ReadLine(), "READY");
  EXPECT_EQ((*reset)->ReadLine(), "EXIT reset: i8042");
  EXPECT_EQ((*reset)->Wait(), 0);

  auto triple = VmmProcess::Spawn(
      {"--kernel", ProbeGuestPath(), "--cmdline", "probe.mode=triple", "--mem-mib", "64"});
  ASSERT_TRUE(triple.ok());
  EXPECT_EQ((*triple)->ReadLine(), "READY");
  EXPECT_EQ((*triple)->ReadLine().value_or("").rfind("EXIT shutdown: triple fault", 0), 0u);
  EXPECT_EQ((*triple)->Wait(), 3);
}

TEST(ForkdVmm, BadInputIsRejectedClearly) {
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"--vcpus", "5", "--kernel", ProbeGuestPath()},
                                             {"--mem-mib", "abc", "--kernel", ProbeGuestPath()},
                                             {"--kernel", ProbeGuestPath(), "--restore", "/tmp"},
                                             {"--frobnicate"},
                                             {"--standby", "--kernel", ProbeGuestPath()}}) {
    auto p = VmmProcess::Spawn(args);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ((*p)->Wait(), 2) << args[0];
  }
  auto missing = VmmProcess::Spawn({"--restore", "/nonexistent/snapshot"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ((*missing)->ReadLine().value_or("").rfind("EXIT error: ", 0), 0u);
  EXPECT_EQ((*missing)->Wait(), 1);
}

}  // namespace
}  // namespace forkd::vmm::testing
