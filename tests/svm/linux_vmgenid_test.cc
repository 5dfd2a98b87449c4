// VMGenID alone, the agent's reseed alone, and neither, in one real Linux guest
// with Linux's vmgenid driver (docs/fork-correctness.md, "Shown in a real
// guest"). The kernel is FORKD_LINUX_KERNEL_VMGENID (in the emulated-SVM tier:
// Debian's generic amd64 kernel, CONFIG_VMGENID=y, with its virtio/vsock modules
// in FORKD_LINUX_INITRD_VMGENID). One template boots, waits out the kernel's
// early-boot reseed schedule, checks that the vmgenid driver is bound to
// forkd-vmm's VGEN device, reseeds once through the agent (so the kernel's own
// timed reseed is 60 s away) and is snapshotted. From that one snapshot, two
// sibling forks restored side by side per case read 64 bytes of /dev/urandom
// first thing (the agent reads the file; nothing is exec'd before):
//   - neither: forkd-vmm-test-hook --test-same-vm-generation (the snapshot's
//     generation ID kept, no GED notify) and no NotifyForked: the siblings
//     collide (positive control; skipped, never passed, when the guest time
//     since the template's reseed reached the timed reseed);
//   - VMGenID alone: a plain forkd-vmm restore (fresh generation ID + GED
//     notify), no NotifyForked: the siblings differ from each other and from
//     the control's bytes, and each fork's kernel log has exactly one
//     "crng reseeded due to virtual machine fork" (drivers/char/random.c,
//     add_vmfork_randomness, called only by the vmgenid driver's notify
//     handler), while the control's forks have none;
//   - agent alone: --test-same-vm-generation, each fork admitted by the gate
//     (NotifyForked: RNDADDENTROPY + RNDRESEEDCRNG): the siblings differ, and no
//     vmfork line.
// Prints "RESULT linux_vmgenid case=<c> differ=<0|1> vmfork_lines=<a>,<b>
// gap_ms=<n> template_uptime_ms=<n>" per case.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/client.h"
#include "agent/protocol.h"
#include "agent/vsock_connect.h"
#include "common/errno_status.h"
#include "forkd/gate/fork_resources.h"
#include "forkd/gate/reseed_gate.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/svm/linux_fork.h"
#include "tests/svm/linux_guest.h"
#include "tests/vmm/owned_fork.h"
#include "tests/vmm/vmm_process.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kHwVirt);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kVmGenIdGuestKernel);

namespace forkd::vmm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr auto kBootGuard = kLinuxBootGuard;
constexpr auto kCallDeadline = kLinuxCallDeadline;
constexpr uint32_t kAgentPort = agent::kDefaultVsockPort;
constexpr size_t kRandomBytes = 64;
// Past Linux's early-boot reseed schedule (2 * CRNG_RESEED_INTERVAL): from
// then on the CRNG reseeds itself only when 60 s have passed since its last
// reseed (drivers/char/random.c, crng_reseed_interval, crng_make_state).
constexpr int64_t kTemplateUptimeMs = 121'000;
constexpr int64_t kTimedReseedMs = 60'000;
constexpr char kVmForkLine[] = "crng reseeded due to virtual machine fork";

std::string VmGenIdInitrd() {
  if (const char* p = std::getenv("FORKD_LINUX_INITRD_VMGENID"); p != nullptr && *p != '\0') {
    return p;
  }
  return FORKD_AGENT_INITRAMFS_PATH;  // a kernel with every driver built in
}

// How many times the guest's kernel log says the vmgenid driver reseeded.
absl::StatusOr<int> VmForkLines(agent::AgentClient& client) {
  FORKD_ASSIGN_OR_RETURN(
      std::string out,
      ExecInGuest(client,
                  {"sh", "-c", absl::StrCat("dmesg | grep -c '", kVmForkLine, "' || true")}));
  int n = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(out), &n)) {
    return absl::InternalError(absl::StrCat("grep -c said '", out, "'"));
  }
  return n;
}

struct CaseResult {
  std::string bytes[2];
  int vmfork_lines[2] = {-1, -1};
  int64_t gap_ms = 0;  // guest time from the template's reseed to the later read
};

class LinuxVmGenIdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("forkd_linux_vmgenid." + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    const std::string uds = (*dir_ / "template.sock").string();
    const char* kernel = std::getenv("FORKD_LINUX_KERNEL_VMGENID");  // checked by the requirement
    if (kernel == nullptr) {
      *setup_error_ = "FORKD_LINUX_KERNEL_VMGENID is not set";
      return;
    }
    auto vm = BootLinuxImage(kernel, VmGenIdInitrd(), uds);
    if (!vm.ok()) {
      *setup_error_ = vm.status().ToString();
      return;
    }
    const auto give_up = std::chrono::steady_clock::now() + kBootGuard;
    auto client = ConnectAgent(uds, kBootGuard);
    if (!client.ok()) {
      *setup_error_ =
          absl::StrCat(client.status().ToString(), "\nserial:\n", (*vm)->serial().text());
      return;
    }
    // The driver must be bound to forkd-vmm's device ("VMGENCTR:00" under it),
    // or nothing below shows VMGenID.
    auto bound = ExecInGuest(*client, {"sh", "-c", "ls /sys/bus/acpi/drivers/vmgenid"});
    if (!bound.ok() || bound->find("VMGENCTR:") == std::string::npos) {
      auto log = ExecInGuest(*client, {"dmesg"});
      *setup_error_ = absl::StrCat("the vmgenid driver is not bound to the VGEN device: ",
                                   bound.ok() ? *bound : bound.status().ToString(), "\ndmesg:\n",
                                   log.ok() ? *log : log.status().ToString());
      return;
    }
    // Wait out the early-boot schedule (linux_reseed_test.cc explains why).
    if (absl::Status up = WaitForGuestUptime(*client, kTemplateUptimeMs, give_up); !up.ok()) {
      *setup_error_ = up.ToString();
      return;
    }
    auto lines = VmForkLines(*client);
    if (!lines.ok() || *lines != 0) {
      *setup_error_ = absl::StrCat("template already has vmfork lines: ",
                                   lines.ok() ? absl::StrCat(*lines) : lines.status().ToString());
      return;
    }
    auto reseed = client->NotifyForked({.generation = 1}, agent::DeadlineIn(kCallDeadline));
    if (!reseed.reseeded()) {
      *setup_error_ = absl::StrCat("template reseed: ", agent::OutcomeName(reseed.outcome), ": ",
                                   reseed.detail);
      return;
    }
    auto uptime = GuestUptimeMs(*client);
    if (!uptime.ok()) {
      *setup_error_ = uptime.status().ToString();
      return;
    }
    template_uptime_ms_ = *uptime;
    if (absl::Status s = (*vm)->SnapshotAndStop((*dir_ / "snap").string()); !s.ok()) {
      *setup_error_ = absl::StrCat("snapshot: ", s.ToString());
      return;
    }
    setup_error_->clear();
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(setup_error_->empty()) << *setup_error_; }

  // Restores two forks side by side (with a fresh VM generation ID and its
  // notify, or the snapshot's kept), then in each: Ping, NotifyForked through
  // the gate when `agent_reseed`, 64 random bytes, the uptime, the vmfork lines.
  static void RunCase(const std::string& name, bool vmgenid, bool agent_reseed, CaseResult& r) {
    std::vector<LinuxFork> forks;
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<LinuxFork> f =
          vmgenid ? RestoreLinuxFork(*dir_, absl::StrCat(name, i), *dir_ / "snap")
                  : RestoreLinuxFork(*dir_, absl::StrCat(name, i), *dir_ / "snap",
                                     {"--test-same-vm-generation"}, FORKD_VMM_TEST_HOOK_PATH);
      ASSERT_TRUE(f.ok()) << f.status();
      forks.push_back(std::move(*f));
    }
    int64_t uptime[2] = {0, 0};
    for (size_t i = 0; i < 2 && !HasFatalFailure(); ++i) {
      LinuxFork& f = forks[i];
      auto client = ConnectAgent(f.uds, 60s);
      ASSERT_TRUE(client.ok()) << client.status() << "\nserial:\n" << f.vmm.vmm->serial().text();
      if (agent_reseed) {
        absl::Status admitted = gate::AdmitFork(
            f.resources,
            agent::ConnectVsockMux(f.uds, kAgentPort, agent::DeadlineIn(kCallDeadline)),
            static_cast<uint64_t>(i + 2), std::nullopt, {.deadline = kCallDeadline});
        ASSERT_TRUE(admitted.ok()) << admitted << "\nserial:\n" << f.vmm.vmm->serial().text();
        auto fd = agent::ConnectVsockMux(f.uds, kAgentPort, agent::DeadlineIn(kCallDeadline));
        ASSERT_TRUE(fd.ok()) << fd.status();
        client = agent::AgentClient(std::move(*fd));
      }
      auto b = ReadGuestRandom(*client, kRandomBytes);
      ASSERT_TRUE(b.ok()) << b.status();
      r.bytes[i] = *b;
      auto u = GuestUptimeMs(*client);
      ASSERT_TRUE(u.ok()) << u.status();
      uptime[i] = *u;
      auto lines = VmForkLines(*client);
      ASSERT_TRUE(lines.ok()) << lines.status();
      r.vmfork_lines[i] = *lines;
    }
    for (LinuxFork& f : forks) EXPECT_TRUE(gate::Reap(f.resources).ok());
    r.gap_ms = std::max(uptime[0], uptime[1]) - template_uptime_ms_;
    std::printf(
        "RESULT linux_vmgenid case=%s differ=%d vmfork_lines=%d,%d gap_ms=%lld "
        "template_uptime_ms=%lld\n",
        name.c_str(), r.bytes[0] != r.bytes[1] ? 1 : 0, r.vmfork_lines[0], r.vmfork_lines[1],
        static_cast<long long>(r.gap_ms), static_cast<long long>(template_uptime_ms_));
    (void)std::fflush(stdout);
  }

  static fs::path* dir_;
  static std::string* setup_error_;
  static int64_t template_uptime_ms_;
  static std::string control_bytes_;
};

fs::path* LinuxVmGenIdTest::dir_ = nullptr;
std::string* LinuxVmGenIdTest::setup_error_ = new std::string("template never set up");
int64_t LinuxVmGenIdTest::template_uptime_ms_ = 0;
std::string LinuxVmGenIdTest::control_bytes_;

// Positive control: with neither the agent's reseed nor a new generation ID
// the siblings' CRNG output collides, on the same kernel as below.
TEST_F(LinuxVmGenIdTest, NeitherSiblingsCollide) {
  CaseResult r;
  RunCase("neither", /*vmgenid=*/false, /*agent_reseed=*/false, r);
  ASSERT_FALSE(HasFatalFailure());
  // The switch works: the driver saw no new generation.
  EXPECT_EQ(r.vmfork_lines[0], 0);
  EXPECT_EQ(r.vmfork_lines[1], 0);
  if (r.bytes[0] != r.bytes[1]) {
    GTEST_SKIP() << "control inconclusive: the un-reseeded siblings read different bytes "
                 << r.gap_ms << " ms of guest time after the template's reseed";
  }
  control_bytes_ = r.bytes[0];
}

// VMGenID alone: forkd-vmm's new generation ID and GED notify, no agent.
TEST_F(LinuxVmGenIdTest, VmGenIdAloneSiblingsDiffer) {
  CaseResult r;
  RunCase("vmgenid", /*vmgenid=*/true, /*agent_reseed=*/false, r);
  ASSERT_FALSE(HasFatalFailure());
  // forkd-vmm's notify reached the driver, which reseeded the CRNG.
  EXPECT_EQ(r.vmfork_lines[0], 1);
  EXPECT_EQ(r.vmfork_lines[1], 1);
  if (r.gap_ms >= kTimedReseedMs) {
    GTEST_SKIP() << "inconclusive: " << r.gap_ms
                 << " ms of guest time passed since the template's reseed, so the kernel's own "
                    "timed reseed may have made the siblings differ";
  }
  EXPECT_NE(r.bytes[0], r.bytes[1]) << "VMGenID alone did not make the siblings differ";
  if (!control_bytes_.empty()) {
    EXPECT_NE(r.bytes[0], control_bytes_);
    EXPECT_NE(r.bytes[1], control_bytes_);
  }
}

// The agent's reseed alone (the guarantee), with VMGenID off.
TEST_F(LinuxVmGenIdTest, AgentReseedAloneSiblingsDiffer) {
  CaseResult r;
  RunCase("agent", /*vmgenid=*/false, /*agent_reseed=*/true, r);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(r.vmfork_lines[0], 0);
  EXPECT_EQ(r.vmfork_lines[1], 0);
  EXPECT_NE(r.bytes[0], r.bytes[1]) << "the agent's reseed alone did not make the siblings differ";
  if (!control_bytes_.empty()) {
    EXPECT_NE(r.bytes[0], control_bytes_);
    EXPECT_NE(r.bytes[1], control_bytes_);
  }
}

}  // namespace
}  // namespace forkd::vmm::testing
