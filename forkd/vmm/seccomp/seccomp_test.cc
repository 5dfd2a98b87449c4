// Each thread kind's filter, installed in a forked child: the calls its
// thread makes pass, a forbidden call (by number or by argument) kills the
// process with SIGSYS, and the same forbidden call without the filter does
// not (positive control). Also: the generated doc matches the code.
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "forkd/snapshot/cpu_identity.h"
#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/snapshot/test_states.h"
#include "forkd/vmm/seccomp/allow_list.h"
#include "forkd/vmm/seccomp/filter.h"
#include "forkd/vmm/seccomp/precompiled.h"
#include "forkd/vmm/seccomp/test_hook.h"
#include "forkd/vmm/seccomp/thread_filters.h"
#include "forkd/vmm/vstate/memory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/assert_ok.h"
#include "tests/support/temp_dir.h"

namespace forkd::vmm::seccomp {
namespace {

struct Outcome {
  bool signaled = false;
  int signal = 0;
  int code = -1;
};

// Runs `body` in a child, after installing `program` when given; the child
// exits 0 when body returns.
Outcome RunChild(const BpfProgram* program, const std::function<void()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (program != nullptr && !InstallOnThisThread(program->insns).ok()) _exit(100);
    body();
    _exit(0);
  }
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  Outcome o;
  o.signaled = WIFSIGNALED(status);
  o.signal = o.signaled ? WTERMSIG(status) : 0;
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

void ExpectSigsys(const Outcome& o, const std::string& what) {
  EXPECT_TRUE(o.signaled && o.signal == SIGSYS)
      << what << ": signaled=" << o.signaled << " signal=" << o.signal << " code=" << o.code;
}
void ExpectClean(const Outcome& o, const std::string& what) {
  EXPECT_TRUE(!o.signaled && o.code == 0)
      << what << ": signaled=" << o.signaled << " signal=" << o.signal << " code=" << o.code;
}

bool Lists(const AllowList& list, std::string_view name) {
  for (const auto& s : list.syscalls) {
    if (std::string_view(s.name) == name) return true;
  }
  return false;
}

class PerKind : public ::testing::TestWithParam<ThreadKind> {};

TEST_P(PerKind, CompilesAndAllowsWhatItsThreadsCall) {
  auto prog_or = Compile(AllowListFor(GetParam()));
  ASSERT_OK(prog_or.status());
  const BpfProgram& prog = *prog_or;
  EXPECT_GT(prog.insns.size(), 10u);
  ExpectClean(RunChild(&prog,
                       [] {
                         // malloc, a futex round trip, a write, a non-executable map.
                         std::vector<char> big(1 << 20, 'x');
                         std::mutex mu;
                         { std::lock_guard lock(mu); }
                         (void)!::write(STDERR_FILENO, "", 0);
                         void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                         if (p == MAP_FAILED) _exit(3);
                         ::munmap(p, 4096);
                       }),
              "allowed calls");
}

TEST_P(PerKind, ForbiddenAttemptKillsWithSigsysAndOnlyBecauseOfTheFilter) {
  const ThreadKind kind = GetParam();
  auto prog_or = Compile(AllowListFor(kind));
  ASSERT_OK(prog_or.status());
  const BpfProgram& prog = *prog_or;
  // Positive control: without the filter the same attempt returns.
  ExpectClean(RunChild(nullptr, [kind] { AttemptForbiddenCall(kind); }), "unfiltered attempt");
  ExpectSigsys(RunChild(&prog, [kind] { AttemptForbiddenCall(kind); }),
               std::string("filtered attempt of ") + ForbiddenAttemptName(kind));
}

TEST_P(PerKind, ExecutableMemoryIsRefusedByArgument) {
  auto prog_or = Compile(AllowListFor(GetParam()));
  ASSERT_OK(prog_or.status());
  const BpfProgram& prog = *prog_or;
  ExpectSigsys(RunChild(&prog,
                        [] {
                          (void)::mmap(nullptr, 4096, PROT_READ | PROT_EXEC,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                        }),
               "mmap PROT_EXEC");
  ExpectSigsys(RunChild(&prog,
                        [] {
                          void* p =
                              ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                          (void)::mprotect(p, 4096, PROT_READ | PROT_EXEC);
                        }),
               "mprotect PROT_EXEC");
}

TEST_P(PerKind, OnlyListedIoctlRequestsPass) {
  const AllowList& list = AllowListFor(GetParam());
  ASSERT_FALSE(list.ioctls.empty());
  auto prog_or = Compile(list);
  ASSERT_OK(prog_or.status());
  const BpfProgram& prog = *prog_or;
  const unsigned long listed = list.ioctls.front().request;
  // A listed request on stderr (not a KVM fd): the filter lets it through
  // and the kernel refuses it.
  ExpectClean(RunChild(&prog,
                       [listed] {
                         if (::ioctl(STDERR_FILENO, listed, 0) != -1) _exit(4);
                       }),
              "listed ioctl");
  ExpectSigsys(RunChild(&prog,
                        [] {
                          termios t{};
                          (void)::ioctl(STDERR_FILENO, TCGETS, &t);
                        }),
               "TCGETS");
}

TEST_P(PerKind, SignalsOtherThanTheKickTermAndAbortAreRefused) {
  auto prog_or = Compile(AllowListFor(GetParam()));
  ASSERT_OK(prog_or.status());
  const BpfProgram& prog = *prog_or;
  // Ignored in this process (and so in the children): only tgkill is tested.
  (void)::signal(SIGRTMIN + 1, SIG_IGN);
  (void)::signal(SIGUSR1, SIG_IGN);
  ExpectClean(RunChild(&prog,
                       [] {
                         if (::syscall(SYS_tgkill, ::getpid(), ::gettid(), SIGRTMIN + 1) != 0) {
                           _exit(3);
                         }
                       }),
              "tgkill kick");
  ExpectSigsys(
      RunChild(&prog, [] { (void)::syscall(SYS_tgkill, ::getpid(), ::gettid(), SIGUSR1); }),
      "tgkill SIGUSR1");
}

INSTANTIATE_TEST_SUITE_P(AllKinds, PerKind, ::testing::ValuesIn(kThreadKinds),
                         [](const auto& p) { return std::string(ThreadKindName(p.param)); });

// A new thread under the device filter allocates and frees bursts of 64 KiB
// buffers (what the vsock muxer does with a large frame), so the heap it
// allocates from grows and shrinks.
void ChurnHeapInFilteredThread(const BpfProgram& prog) {
  std::thread t([&prog] {
    if (!InstallOnThisThread(prog.insns).ok()) _exit(100);
    for (int round = 0; round < 50; ++round) {
      std::vector<std::vector<char>> v;
      for (int i = 0; i < 20; ++i) v.emplace_back(64 * 1024, 'x');
    }
  });
  t.join();
}

// glibc's first shrink of a per-thread arena's heap opens
// /proc/sys/vm/overcommit_memory (thread_filters.h, KeepMallocInOneArena):
// a filtered device thread doing that was killed with SIGSYS in forkd-vmm
// (linux_fork_io_test's 4 MiB vsock transfer). With malloc kept in one arena,
// as ArmThreadFilters does, the same churn is clean. Control: without it the
// churn is killed with SIGSYS, which shows the churn really shrinks a
// thread's heap (skipped, never passed, if this glibc does not do that).
TEST(Seccomp, FreeingMemoryInAFilteredThreadOpensNoFile) {
  auto prog = Compile(AllowListFor(ThreadKind::kDevice));
  ASSERT_OK(prog.status());
  ExpectClean(RunChild(nullptr,
                       [&] {
                         if (!KeepMallocInOneArena().ok()) _exit(101);
                         ChurnHeapInFilteredThread(*prog);
                       }),
              "heap churn in a device thread, malloc in one arena");
  const Outcome control = RunChild(nullptr, [&] { ChurnHeapInFilteredThread(*prog); });
  if (!(control.signaled && control.signal == SIGSYS)) {
    GTEST_SKIP() << "control inconclusive: the churn in a thread with its own arena was not "
                    "killed (signaled="
                 << control.signaled << " signal=" << control.signal << " code=" << control.code
                 << "), so this glibc did not open a file on the heap shrink";
  }
}

TEST(Seccomp, DeviceThreadsMayOnlyMakeUnixSockets) {
  auto prog_or = Compile(AllowListFor(ThreadKind::kDevice));
  ASSERT_OK(prog_or.status());
  const BpfProgram& prog = *prog_or;
  ExpectClean(RunChild(&prog,
                       [] {
                         if (::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) < 0) _exit(3);
                       }),
              "AF_UNIX socket");
  ExpectSigsys(RunChild(&prog, [] { (void)::socket(AF_INET6, SOCK_DGRAM, 0); }), "AF_INET6");
}

TEST(Seccomp, OnlyTheControlThreadOpensFilesAndNoThreadForksOrExecs) {
  EXPECT_TRUE(Lists(AllowListFor(ThreadKind::kControl), "openat"));
  EXPECT_FALSE(Lists(AllowListFor(ThreadKind::kVcpu), "openat"));
  EXPECT_FALSE(Lists(AllowListFor(ThreadKind::kDevice), "openat"));
  for (ThreadKind kind : kThreadKinds) {
    for (const char* banned : {"execve", "execveat", "fork", "vfork", "clone", "clone3", "ptrace",
                               "mount", "setns", "unshare", "bpf", "open", "process_vm_writev"}) {
      EXPECT_FALSE(Lists(AllowListFor(kind), banned)) << ThreadKindName(kind) << " " << banned;
    }
  }
  // The vCPU list has KVM_RUN; the control list never does.
  auto has_run = [](ThreadKind k) {
    for (const auto& i : AllowListFor(k).ioctls) {
      if (std::string_view(i.name) == "KVM_RUN") return true;
    }
    return false;
  };
  EXPECT_TRUE(has_run(ThreadKind::kVcpu));
  EXPECT_FALSE(has_run(ThreadKind::kControl));
  EXPECT_FALSE(has_run(ThreadKind::kDevice));
}

TEST(Seccomp, EachSyscallIsListedOncePerKind) {
  for (ThreadKind kind : kThreadKinds) {
    std::set<std::string_view> seen;
    for (const auto& s : AllowListFor(kind).syscalls) {
      EXPECT_TRUE(seen.insert(s.name).second)
          << ThreadKindName(kind) << " lists " << s.name << " twice";
    }
  }
}

TEST(Seccomp, ForbiddenAttemptsAreOutsideTheirLists) {
  EXPECT_FALSE(Lists(AllowListFor(ThreadKind::kVcpu), ForbiddenAttemptName(ThreadKind::kVcpu)));
  // Device threads list socket, but only for AF_UNIX; the attempt uses AF_INET.
  EXPECT_TRUE(Lists(AllowListFor(ThreadKind::kDevice), ForbiddenAttemptName(ThreadKind::kDevice)));
  EXPECT_FALSE(
      Lists(AllowListFor(ThreadKind::kControl), ForbiddenAttemptName(ThreadKind::kControl)));
}

// SNAPSHOT's file side on the control thread (directory, sparse memory file
// with its temporary name, state, manifest, fsyncs, renames) under the real
// control filter. The KVM_GET_* side needs /dev/kvm (vmm_isolation_test).
TEST(Seccomp, ControlFilterCoversTheSnapshotFileWrites) {
  auto prog_or = Compile(AllowListFor(ThreadKind::kControl));
  ASSERT_OK(prog_or.status());
  const BpfProgram& prog = *prog_or;
  forkd::testing::TempDir tmp("forkd_seccomp_snap");
  const std::filesystem::path dir = tmp.path() / "a" / "snap";
  auto mem = GuestMemory::Anonymous(2 << 20);
  ASSERT_OK(mem.status());
  ASSERT_OK(mem->WriteObj<uint64_t>(4096, 0x1234));
  snapshot::SnapshotState state = snapshot::testing::MinimalState();
  state.header.memory = {{0, mem->size(), 0}};
  ExpectClean(RunChild(&prog,
                       [&] {
                         std::error_code ec;
                         std::filesystem::create_directories(dir, ec);
                         if (ec) _exit(3);
                         state.header.cpu = snapshot::HostCpuIdentity();
                         if (!mem->SaveToFile(snapshot::MemoryPath(dir).string()).ok()) _exit(4);
                         if (!snapshot::SaveSnapshot(dir, state).ok()) _exit(5);
                       }),
              "snapshot files under the control filter");
  // Positive control: the files are really there (and the vCPU filter, which
  // may not open files, dies on the same work).
  EXPECT_TRUE(std::filesystem::exists(snapshot::MemoryPath(dir)));
  std::filesystem::remove_all(dir);
  auto vcpu = Compile(AllowListFor(ThreadKind::kVcpu));
  ASSERT_OK(vcpu.status());
  ExpectSigsys(RunChild(&*vcpu,
                        [&] {
                          std::error_code ec;
                          std::filesystem::create_directories(dir, ec);
                          (void)mem->SaveToFile(snapshot::MemoryPath(dir).string());
                        }),
               "snapshot files under the vCPU filter");
}

// forkd-vmm installs the programs compiled at build time (precompiled.h):
// each must be exactly what the allow-list compiles to now, so the shipped
// filters are the ones every test above checks.
TEST_P(PerKind, PrecompiledProgramMatchesTheAllowList) {
  auto prog = Compile(AllowListFor(GetParam()));
  ASSERT_OK(prog.status());
  const std::span<const sock_filter> pre = PrecompiledProgram(GetParam());
  ASSERT_EQ(pre.size(), prog->insns.size()) << ThreadKindName(GetParam());
  for (size_t i = 0; i < pre.size(); ++i) {
    const sock_filter& a = pre[i];
    const sock_filter& b = prog->insns[i];
    EXPECT_TRUE(a.code == b.code && a.jt == b.jt && a.jf == b.jf && a.k == b.k)
        << ThreadKindName(GetParam()) << " instruction " << i;
  }
}

TEST(Seccomp, InstallRefusesAnEmptyProgram) {
  EXPECT_EQ(InstallOnThisThread({}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Seccomp, GeneratedDocMatchesTheCode) {
  const std::string path = std::string(FORKD_SOURCE_DIR) + "/docs/vmm-seccomp.md";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "missing " << path << ": run build/forkd/vmm/forkd-vmm --print-seccomp > "
                  << "docs/vmm-seccomp.md";
  std::stringstream doc;
  doc << in.rdbuf();
  EXPECT_EQ(doc.str(), RenderMarkdown())
      << path << " is stale: run build/forkd/vmm/forkd-vmm --print-seccomp > docs/vmm-seccomp.md";
}

}  // namespace
}  // namespace forkd::vmm::seccomp
