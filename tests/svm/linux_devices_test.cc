// Debian's stock cloud kernel under forkd-vmm with 4 vCPUs, its devices found
// through the ACPI tables and its modules loaded by the agent:
//   - all 4 vCPUs online (`nproc`), and still 4 in a fork restored from its
//     snapshot and admitted by the gate;
//   - virtio-rng is the kernel's current hwrng and /dev/hwrng yields bytes, in
//     the template and in the fork.
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "agent/client.h"
#include "agent/protocol.h"
#include "agent/vsock_connect.h"
#include "forkd/gate/fork_resources.h"
#include "forkd/gate/reseed_gate.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/svm/linux_fork.h"
#include "tests/svm/linux_guest.h"
#include "tests/vmm/owned_fork.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kHwVirt);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kLinuxGuestKernel);

namespace forkd::vmm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr auto kBootGuard = kLinuxBootGuard;

// nproc, the hwrng the kernel uses, and 32 bytes of /dev/hwrng.
void CheckGuest(agent::AgentClient& client, const std::string& who) {
  auto nproc = ExecInGuest(client, {"nproc"});
  ASSERT_TRUE(nproc.ok()) << who << ": " << nproc.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*nproc), "4") << who;
  auto current = ReadGuestFile(client, "/sys/class/misc/hw_random/rng_current", 128);
  ASSERT_TRUE(current.ok()) << who << ": " << current.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*current).substr(0, 10), "virtio_rng") << who;
  auto bytes = ReadGuestFile(client, "/dev/hwrng", 32);
  ASSERT_TRUE(bytes.ok()) << who << ": " << bytes.status();
  EXPECT_EQ(bytes->size(), 32U) << who;
  EXPECT_NE(*bytes, std::string(32, '\0')) << who;
}

TEST(LinuxDevicesTest, FourVcpusAndHwrngInTemplateAndRestoredFork) {
  const fs::path dir =
      fs::temp_directory_path() / ("forkd_linux_devices." + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path snap = dir / "snap";
  {
    const std::string uds = (dir / "template.sock").string();
    auto vm = BootLinux(uds, {"--vcpus", "4"});
    ASSERT_TRUE(vm.ok()) << vm.status();
    auto client = ConnectAgent(uds, kBootGuard);
    ASSERT_TRUE(client.ok()) << client.status() << "\nserial:\n" << (*vm)->serial().text();
    CheckGuest(*client, "template");
    ASSERT_FALSE(HasFatalFailure());
    absl::Status saved = (*vm)->SnapshotAndStop(snap.string());
    ASSERT_TRUE(saved.ok()) << saved;
  }
  auto fork = RestoreLinuxFork(dir, "fork", snap);
  ASSERT_TRUE(fork.ok()) << fork.status();
  const std::string& uds = fork->uds;
  gate::ForkResources& resources = fork->resources;
  auto client = ConnectAgent(uds, 60s);  // after the restore's vsock reset
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Status admitted = gate::AdmitFork(
      resources,
      agent::ConnectVsockMux(uds, agent::kDefaultVsockPort, agent::DeadlineIn(kLinuxCallDeadline)),
      2, std::nullopt, {.deadline = kLinuxCallDeadline});
  ASSERT_TRUE(admitted.ok()) << admitted << "\nserial:\n" << fork->vmm.vmm->serial().text();
  CheckGuest(*client, "fork");
  EXPECT_TRUE(gate::Reap(resources).ok());
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace forkd::vmm::testing
