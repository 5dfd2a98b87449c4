// Tier 2: forkd-vmm's jail and per-thread seccomp filters on real VMs of
// the probe guest (docs/threat-model.md, "The jail" and "System call
// filters"). Needs /dev/kvm and root (the jail).
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "forkd/gate/fork_resources.h"
#include "forkd/vmm/seccomp/thread_kind.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"
#include "tests/vmm/vmm_process.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::vmm::testing {
namespace {

namespace fs = std::filesystem;
constexpr uid_t kJailId = 61300;

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One "Key:" value of a /proc status file.
std::string Field(const fs::path& status, const std::string& key) {
  std::istringstream in(ReadAll(status));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::string v = line.substr(key.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return "<missing>";
}

// A probe-guest snapshot the jail uid can read (the daemon's snapshot store
// would be group-readable by the VMMs' gid).
class Isolation : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new forkd::testing::TempDir("forkd_isolation");
    snap_ = dir_->path() / "snap";
    auto src = VmmProcess::Spawn(
        {"--kernel", ProbeGuestPath(), "--cmdline", "probe.report=32", "--mem-mib", "64"});
    ASSERT_TRUE(src.ok()) << src.status();
    ASSERT_EQ((*src)->ReadLine(), "READY");
    ASSERT_TRUE((*src)->serial().WaitFor("PROBE count 1").has_value());
    ASSERT_TRUE((*src)->SnapshotAndStop(snap_.string()).ok());
    fs::permissions(snap_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);
    for (const auto& e : fs::directory_iterator(snap_)) {
      fs::permissions(e.path(),
                      fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    }
  }
  static void TearDownTestSuite() { delete dir_; }

  std::vector<std::string> JailArgs(const forkd::testing::TempDir& root) const {
    return {"--jail-root",           root.path().string(), "--jail-uid",
            std::to_string(kJailId), "--jail-gid",         std::to_string(kJailId)};
  }
  std::vector<std::string> Restore(std::vector<std::string> extra) const {
    std::vector<std::string> a = {"--restore", snap_.string()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  static forkd::testing::TempDir* dir_;
  static fs::path snap_;
};
forkd::testing::TempDir* Isolation::dir_ = nullptr;
fs::path Isolation::snap_;

// Every thread of the process: its seccomp mode (2 = filter).
std::map<int, std::string> ThreadSeccomp(pid_t pid) {
  std::map<int, std::string> out;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    out[std::stoi(t.path().filename().string())] = Field(t.path() / "status", "Seccomp");
  }
  return out;
}

TEST_F(Isolation, AJailedFilteredRestoreRunsTheGuestWithNothingElse) {
  forkd::testing::TempDir root("forkd_jail_root");
  auto fork = VmmProcess::Spawn(Restore(JailArgs(root)));
  ASSERT_TRUE(fork.ok()) << fork.status();
  ASSERT_EQ((*fork)->ReadLine(), "READY") << (*fork)->serial().text();
  (*fork)->input().Send("z");
  EXPECT_TRUE((*fork)->serial().WaitFor("PROBE input 0x7a").has_value());
  const fs::path proc = "/proc/" + std::to_string((*fork)->pid());
  for (const char* cap : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(Field(proc / "status", cap), "0000000000000000") << cap;
  }
  const std::string id = std::to_string(kJailId);
  EXPECT_EQ(Field(proc / "status", "Uid"), id + "\t" + id + "\t" + id + "\t" + id);
  EXPECT_EQ(Field(proc / "status", "NoNewPrivs"), "1");
  const auto threads = ThreadSeccomp((*fork)->pid());
  EXPECT_GE(threads.size(), 4u);  // main, vCPU, notifier, signal waiter, command reader
  for (const auto& [tid, mode] : threads) EXPECT_EQ(mode, "2") << "thread " << tid;
  // Its root: only what was bound (the process's view through /proc).
  std::set<std::string> top;
  for (const auto& e : fs::directory_iterator(proc / "root")) {
    top.insert(e.path().filename().string());
  }
  EXPECT_EQ(top.count("etc"), 0u);
  EXPECT_EQ(top.count("proc"), 0u);
  EXPECT_EQ(top.count("dev"), 1u);
  std::set<std::string> dev;
  for (const auto& e : fs::directory_iterator(proc / "root/dev")) {
    dev.insert(e.path().filename().string());
  }
  EXPECT_EQ(dev, std::set<std::string>{"kvm"});
  (*fork)->Send("STOP");
  EXPECT_EQ((*fork)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*fork)->Wait(), 0);
  EXPECT_TRUE(fs::is_empty(root.path()));
}

// Positive control for the checks above: the debugging flags really turn
// both off (and say so).
TEST_F(Isolation, TheDebugFlagsTurnBothOff) {
  auto fork = VmmProcess::Spawn(Restore({"--no-jail", "--no-seccomp"}));
  ASSERT_TRUE(fork.ok()) << fork.status();
  ASSERT_EQ((*fork)->ReadLine(), "READY");
  const fs::path proc = "/proc/" + std::to_string((*fork)->pid());
  EXPECT_NE(Field(proc / "status", "CapEff"), "0000000000000000");
  for (const auto& [tid, mode] : ThreadSeccomp((*fork)->pid())) {
    EXPECT_EQ(mode, "0") << "thread " << tid;
  }
  (*fork)->Send("STOP");
  EXPECT_EQ((*fork)->ReadLine(), "EXIT stopped: host request");
  EXPECT_EQ((*fork)->Wait(), 0);
}

// The control thread's filter allows a SNAPSHOT (KVM_GET_*, file writes) from
// a jailed, filtered VMM booted from a kernel, into a --jail-rw directory.
TEST_F(Isolation, AJailedFilteredBootTakesASnapshot) {
  forkd::testing::TempDir root("forkd_jail_root"), out("forkd_jail_out");
  ASSERT_EQ(::chown(out.path().c_str(), kJailId, kJailId), 0);
  auto args = JailArgs(root);
  args.insert(args.end(), {"--kernel", ProbeGuestPath(), "--cmdline", "probe.report=32",
                           "--mem-mib", "64", "--jail-rw", out.path().string()});
  auto src = VmmProcess::Spawn(args);
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_EQ((*src)->ReadLine(), "READY");
  ASSERT_TRUE((*src)->serial().WaitFor("PROBE count 1").has_value());
  const fs::path snap = out.path() / "snap";
  ASSERT_TRUE((*src)->SnapshotAndStop(snap.string()).ok());
  auto fork = VmmProcess::Spawn({"--restore", snap.string()});
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ((*fork)->ReadLine(), "READY");
}

class ForbiddenCall : public Isolation,
                      public ::testing::WithParamInterface<seccomp::ThreadKind> {};

// forkd-vmm-test-hook makes the first thread of one kind attempt a call its
// filter forbids; the kernel kills the whole VMM with SIGSYS (a control
// thread before READY, a vCPU or device thread possibly just after it),
// and the gate's reap path cleans up what the fork owned.
TEST_P(ForbiddenCall, KillsTheVmmWithSigsysAndTheForkIsReaped) {
  const std::string kind = seccomp::ThreadKindName(GetParam());
  // Positive control: the same binary without the flag runs the guest.
  {
    forkd::testing::TempDir root("forkd_jail_root");
    auto ok = VmmProcess::SpawnBinary(FORKD_VMM_TEST_HOOK_PATH, Restore(JailArgs(root)));
    ASSERT_TRUE(ok.ok()) << ok.status();
    ASSERT_EQ((*ok)->ReadLine(), "READY");
    (*ok)->Send("STOP");
    EXPECT_EQ((*ok)->Wait(), 0);
  }
  forkd::testing::TempDir root("forkd_jail_root"), files("forkd_jail_files");
  auto p = VmmProcess::SpawnBinary(FORKD_VMM_TEST_HOOK_PATH, Restore([&] {
                                     auto a = JailArgs(root);
                                     a.insert(a.end(), {"--test-forbidden-syscall", kind});
                                     return a;
                                   }()));
  ASSERT_TRUE(p.ok()) << p.status();
  // The control fd reaches EOF: the process is gone. A vCPU or device thread
  // makes its first call whenever the scheduler runs it, which may be after
  // the control thread announced READY (forkd/vmm/main.cc starts them before
  // it seals itself): READY may come first, nothing else may.
  std::optional<std::string> line = (*p)->ReadLine();
  if (line == "READY" && GetParam() != seccomp::ThreadKind::kControl) line = (*p)->ReadLine();
  EXPECT_EQ(line, std::nullopt);
  const pid_t pid = (*p)->Release();
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  EXPECT_TRUE(info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED);
  EXPECT_EQ(info.si_status, SIGSYS) << kind;
  gate::ForkResources res;
  res.fork_id = "sigsys-" + kind;
  auto pidfd = gate::OpenPidfd(pid);
  ASSERT_TRUE(pidfd.ok()) << pidfd.status();
  res.vmm_pidfd = *std::move(pidfd);
  res.paths = {files.path()};
  EXPECT_TRUE(gate::Reap(res).ok());
  EXPECT_FALSE(fs::exists(files.path()));
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, WNOHANG), -1);  // already reaped: no zombie left
  EXPECT_EQ(errno, ECHILD);
}

INSTANTIATE_TEST_SUITE_P(AllKinds, ForbiddenCall, ::testing::ValuesIn(seccomp::kThreadKinds),
                         [](const auto& p) {
                           return std::string(seccomp::ThreadKindName(p.param));
                         });

}  // namespace
}  // namespace forkd::vmm::testing
