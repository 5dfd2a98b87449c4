// Tier 3: a real Linux guest running the forkd agent (the initramfs built by
// agent/CMakeLists.txt, the agent as /init) under forkd-vmm processes:
//   - the agent answers Ping and NotifyForked over virtio-vsock;
//   - two forks restored from one snapshot, each reseeded through the gate,
//     read different /dev/urandom bytes (and differ from the parent).
// Needs hardware virtualization: on kvm_pvm hosts a stock kernel needs ~12
// minutes to reach /init and its user space cannot make system calls
// (docs/host-facts.md), so the binary skips there with that reason. The
// guest kernel comes from FORKD_LINUX_KERNEL (docs/guest-kernel.md lists the
// configuration it needs).
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/client.h"
#include "agent/protocol.h"
#include "agent/vsock_connect.h"
#include "common/errno_status.h"
#include "forkd/gate/fork_resources.h"
#include "forkd/gate/reseed_gate.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/vmm/owned_fork.h"
#include "tests/vmm/vmm_process.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kHwVirt);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kLinuxGuestKernel);

namespace forkd::vmm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Hang guard only: a guest kernel boots in well under a second on hardware, but
// a stock kernel loading its modules under the emulated-SVM tier needs minutes.
constexpr auto kBootGuard = 600s;
constexpr auto kCallDeadline = 5s;
constexpr uint32_t kAgentPort = agent::kDefaultVsockPort;
constexpr size_t kRandomBytes = 64;

// FORKD_LINUX_INITRD: the agent initramfs with a stock kernel's modules
// (agent/initramfs/add-kernel-modules); otherwise the plain one.
std::string InitramfsPath() {
  if (const char* p = std::getenv("FORKD_LINUX_INITRD"); p != nullptr && *p != '\0') return p;
  return FORKD_AGENT_INITRAMFS_PATH;
}

// Connects to the agent once it listens: until then the multiplexer hangs up
// (no guest listener on the port), so retry until the boot guard runs out.
absl::StatusOr<agent::AgentClient> ConnectAgent(const std::string& uds) {
  const auto give_up = std::chrono::steady_clock::now() + kBootGuard;
  absl::Status last = absl::DeadlineExceededError("never tried");
  while (std::chrono::steady_clock::now() < give_up) {
    auto fd = agent::ConnectVsockMux(uds, kAgentPort, agent::DeadlineIn(kCallDeadline));
    if (fd.ok()) {
      agent::AgentClient client(std::move(*fd));
      auto pong = client.Ping(agent::DeadlineIn(kCallDeadline));
      if (pong.ok()) return client;
      last = pong.status();
    } else {
      last = fd.status();
    }
    std::this_thread::sleep_for(50ms);
  }
  return absl::DeadlineExceededError(absl::StrCat("agent never answered Ping: ", last.ToString()));
}

absl::StatusOr<std::string> ReadUrandom(agent::AgentClient& client) {
  agent::v1::ReadFileRequest req;
  req.set_path("/dev/urandom");
  req.set_max_bytes(kRandomBytes);
  FORKD_ASSIGN_OR_RETURN(auto resp, client.ReadFile(req, agent::DeadlineIn(kCallDeadline)));
  if (!resp.error().empty()) return absl::InternalError("read /dev/urandom: " + resp.error());
  if (resp.data().size() != kRandomBytes) {
    return absl::InternalError(
        absl::StrCat("read /dev/urandom: ", resp.data().size(), " bytes, wanted ", kRandomBytes));
  }
  return resp.data();
}

class LinuxAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("forkd_linux_agent." + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::unique_ptr<VmmProcess> BootLinux(const std::string& uds) {
    std::string cmdline = "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux quiet";
    // Extra guest words for one tier (the emulated-SVM tier passes noxsave, docs/testing-tiers.md).
    if (const char* extra = std::getenv("FORKD_LINUX_CMDLINE_EXTRA"))
      cmdline += std::string(" ") + extra;
    auto vmm = VmmProcess::Spawn({"--kernel", std::getenv("FORKD_LINUX_KERNEL"), "--initrd",
                                  InitramfsPath(), "--cmdline", cmdline, "--mem-mib", "256",
                                  "--virtio-rng", "--vsock-cid", "3", "--vsock-uds", uds});
    EXPECT_TRUE(vmm.ok()) << vmm.status();
    if (!vmm.ok()) return nullptr;
    EXPECT_EQ((*vmm)->ReadLine(), "READY");
    return std::move(*vmm);
  }

  fs::path dir_;
};

TEST_F(LinuxAgentTest, AgentAnswersPingAndNotifyForked) {
  const std::string uds = (dir_ / "vm.sock").string();
  auto vm = BootLinux(uds);
  ASSERT_NE(vm, nullptr);
  auto client = ConnectAgent(uds);
  ASSERT_TRUE(client.ok()) << client.status() << "\nserial:\n" << vm->serial().text();
  auto result = client->NotifyForked({.generation = 1}, agent::DeadlineIn(kCallDeadline));
  EXPECT_TRUE(result.reseeded()) << agent::OutcomeName(result.outcome) << ": " << result.detail;
  vm->Send("STOP");
  EXPECT_EQ(vm->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ(vm->Wait(), 0);
}

TEST_F(LinuxAgentTest, ReseededForksReadDifferentUrandom) {
  const fs::path snap = dir_ / "snap";
  std::string parent_bytes;
  {
    const std::string uds = (dir_ / "parent.sock").string();
    auto vm = BootLinux(uds);
    ASSERT_NE(vm, nullptr);
    auto client = ConnectAgent(uds);
    ASSERT_TRUE(client.ok()) << client.status() << "\nserial:\n" << vm->serial().text();
    auto bytes = ReadUrandom(*client);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    parent_bytes = *bytes;
    absl::Status saved = vm->SnapshotAndStop(snap.string());
    ASSERT_TRUE(saved.ok()) << saved;
  }

  std::string fork_bytes[2];
  for (int i = 0; i < 2; ++i) {
    const fs::path fork_dir = dir_ / ("fork" + std::to_string(i));
    fs::create_directories(fork_dir);
    const std::string uds = (fork_dir / "vsock.sock").string();
    gate::ForkResources resources;
    resources.fork_id = "fork" + std::to_string(i);
    resources.paths = {fork_dir};
    auto fork = SpawnOwnedFork({"--restore", snap.string(), "--vsock-uds", uds}, resources);
    ASSERT_TRUE(fork.ok()) << fork.status();
    // The guest resets every vsock connection when it handles the restore's
    // transport reset event; one made before that is closed under the gate.
    // An answered Ping (retried) shows the agent is reachable.
    ASSERT_TRUE(ConnectAgent(uds).ok()) << "\nserial:\n" << fork->vmm->serial().text();
    // The gate: only a fork whose agent proves the reseed is admitted.
    absl::Status admitted = gate::AdmitFork(
        resources, agent::ConnectVsockMux(uds, kAgentPort, agent::DeadlineIn(kCallDeadline)),
        static_cast<uint64_t>(i + 2), std::nullopt, {.deadline = kCallDeadline});
    ASSERT_TRUE(admitted.ok()) << admitted << "\nserial:\n" << fork->vmm->serial().text();
    auto fd = agent::ConnectVsockMux(uds, kAgentPort, agent::DeadlineIn(kCallDeadline));
    ASSERT_TRUE(fd.ok()) << fd.status();
    agent::AgentClient client(std::move(*fd));
    auto bytes = ReadUrandom(client);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    fork_bytes[i] = *bytes;
    EXPECT_TRUE(gate::Reap(resources).ok());
  }
  EXPECT_NE(fork_bytes[0], fork_bytes[1]) << "two forks read the same /dev/urandom bytes";
  EXPECT_NE(fork_bytes[0], parent_bytes);
  EXPECT_NE(fork_bytes[1], parent_bytes);
}

}  // namespace
}  // namespace forkd::vmm::testing
