// forkd-vmm-keeper as forkd runs it (VmmChild::Spawn), with /bin/sh
// scripts (and perl-base's perl, which keeps the signal mask it is given,
// where dash clears it) as the "VMM": what the VMM inherits, the keeper's
// own state, its exit status, and who dies with whom.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "common/unique_fd.h"
#include "forkd/sandbox/process_identity.h"
#include "forkd/sandbox/vmm_child.h"
#include "forkd/sandbox/vmm_exit.h"
#include "gtest/gtest.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace forkd::sandbox {
namespace {

using namespace std::chrono_literals;
constexpr auto kHangGuard = 60s;  // bounds a wait that ends by itself

absl::StatusOr<VmmChild> SpawnScript(const std::string& script) {
  VmmSpawnOptions o;
  o.keeper = FORKD_KEEPER_PATH;
  o.binary = "/bin/sh";
  o.args = {"-c", script, "fake-vmm"};  // VmmChild's own flags become $1...
  return VmmChild::Spawn(o);
}

// The hex mask of `field` (SigIgn, SigBlk) in /proc/PID/status.
uint64_t StatusMask(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0)
      return std::stoull(line.substr(field.size() + 1), nullptr, 16);
  }
  ADD_FAILURE() << "no " << field << " for " << pid;
  return 0;
}

uint64_t Bit(int sig) { return uint64_t{1} << (sig - 1); }

// The status the keeper behind `keeper_pidfd` exits with, reaping it.
VmmExit ReapKeeper(const UniqueFd& keeper_pidfd) {
  VmmExit e = KeeperReport(keeper_pidfd.get(), kHangGuard);
  siginfo_t si{};
  EXPECT_EQ(
      ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(keeper_pidfd.get()), &si, WEXITED),
      0)
      << std::strerror(errno);
  return e;
}

TEST(Keeper, TheVmmGetsExactlyItsDescriptorsAndForkdsSignalState) {
  // A descriptor forkd leaked without CLOEXEC never reaches the VMM.
  UniqueFd leak(::open("/dev/null", O_RDONLY));
  ASSERT_TRUE(leak);
  // forkd's signal state (SIGPIPE ignored, SIGUSR2 blocked in the spawning
  // thread) is the VMM's, not the keeper's.
  struct sigaction ign {
  }, old_pipe{};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGPIPE, &ign, &old_pipe), 0);
  sigset_t usr2, old_mask;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &usr2, &old_mask), 0);
  VmmSpawnOptions o;
  o.keeper = FORKD_KEEPER_PATH;
  o.binary = "/usr/bin/perl";
  o.args = {"-e",
            "open(my $c, '>&=', 3) or die; syswrite($c, \"READY\\n\"); sysread($c, my $x, 1); "
            "exit 0",
            "--"};  // VmmChild's own flags go to @ARGV
  auto vmm = VmmChild::Spawn(o);
  ASSERT_EQ(::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr), 0);
  ASSERT_EQ(::sigaction(SIGPIPE, &old_pipe, nullptr), 0);
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  ASSERT_TRUE(vmm->Expect("READY", kHangGuard).ok());
  std::set<std::string> fds;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(vmm->pid()) + "/fd", ec)) {
    fds.insert(e.path().filename().string());
  }
  ASSERT_FALSE(ec) << ec.message();
  // 0-2, the control socket (3) and forkd's duplicate of its end (4).
  EXPECT_EQ(fds, (std::set<std::string>{"0", "1", "2", "3", "4"}));

  const pid_t keeper = vmm->keeper_pid();
  ASSERT_GT(keeper, 0);
  EXPECT_EQ(ParentOf(vmm->pid()).value_or(-1), keeper);
  EXPECT_EQ(ParentOf(keeper).value_or(-1), ::getpid());
  // The keeper leads its own session; the VMM stays in it.
  EXPECT_EQ(::getsid(keeper), keeper);
  EXPECT_NE(::getsid(0), keeper);
  EXPECT_EQ(::getsid(vmm->pid()), keeper);
  const uint64_t keeper_ign = StatusMask(keeper, "SigIgn");
  EXPECT_EQ(keeper_ign & (Bit(SIGHUP) | Bit(SIGINT) | Bit(SIGPIPE)),
            Bit(SIGHUP) | Bit(SIGINT) | Bit(SIGPIPE));
  EXPECT_EQ(StatusMask(keeper, "SigBlk"), 0u);
  EXPECT_NE(StatusMask(vmm->pid(), "SigIgn") & Bit(SIGPIPE), 0u);
  EXPECT_EQ(StatusMask(vmm->pid(), "SigIgn") & (Bit(SIGHUP) | Bit(SIGINT)), 0u);
  EXPECT_NE(StatusMask(vmm->pid(), "SigBlk") & Bit(SIGUSR2), 0u);

  ASSERT_TRUE(vmm->Send("go").ok());
  UniqueFd keeper_pidfd = vmm->TakeKeeperPidfd();
  const VmmExit e = ReapKeeper(keeper_pidfd);
  EXPECT_EQ(e.Describe(), "vmm exited with status 0");
}

TEST(Keeper, ExitsWithTheVmmsStatusAndHoldsNoControlSocket) {
  struct Case {
    std::string script;
    VmmExit::Kind kind;
    int value;
    std::string describe;
  };
  for (const Case& c :
       {Case{"exit 7", VmmExit::Kind::kExited, 7, "vmm exited with status 7"},
        Case{"kill -KILL $$", VmmExit::Kind::kKilled, SIGKILL, "vmm killed by signal 9"},
        Case{"kill -SEGV $$", VmmExit::Kind::kKilled, SIGSEGV, "vmm killed by signal 11"}}) {
    SCOPED_TRACE(c.script);
    auto vmm = SpawnScript(c.script);
    ASSERT_TRUE(vmm.ok()) << vmm.status();
    // EOF once the VMM is gone: the keeper kept no copy of either end.
    auto line = vmm->ReadLine(kHangGuard);
    EXPECT_EQ(line.status().code(), absl::StatusCode::kUnavailable) << line.status();
    UniqueFd keeper_pidfd = vmm->TakeKeeperPidfd();
    const VmmExit e = ReapKeeper(keeper_pidfd);
    EXPECT_EQ(e.kind, c.kind);
    EXPECT_EQ(e.value, c.value);
    EXPECT_EQ(e.Describe(), c.describe);
  }
}

TEST(Keeper, AMissingVmmBinaryIsTheKeepersExit127) {
  VmmSpawnOptions o;
  o.keeper = FORKD_KEEPER_PATH;
  o.binary = "/nonexistent/forkd-vmm";
  auto vmm = VmmChild::Spawn(o);
  ASSERT_TRUE(vmm.ok()) << vmm.status();  // the keeper forked it; the exec failed
  UniqueFd keeper_pidfd = vmm->TakeKeeperPidfd();
  const VmmExit e = ReapKeeper(keeper_pidfd);
  EXPECT_EQ(e.Describe(), "vmm exited with status 127");
}

TEST(Keeper, AKeeperThatCannotStartIsASpawnError) {
  VmmSpawnOptions o;
  o.keeper = "/nonexistent/forkd-vmm-keeper";
  o.binary = "/bin/true";
  auto vmm = VmmChild::Spawn(o);
  ASSERT_FALSE(vmm.ok());
  EXPECT_NE(vmm.status().message().find("exited before starting the VMM"), std::string::npos)
      << vmm.status();
  EXPECT_NE(vmm.status().message().find("exit status 127"), std::string::npos) << vmm.status();
  o.keeper.clear();
  EXPECT_EQ(VmmChild::Spawn(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KeeperStatus, DecodesTheVmmsStatusAndTheKeepersDeath) {
  EXPECT_EQ(DecodeKeeperStatus(CLD_EXITED, 0).Describe(), "vmm exited with status 0");
  EXPECT_EQ(DecodeKeeperStatus(CLD_EXITED, 4).Describe(), "vmm exited with status 4");
  EXPECT_EQ(DecodeKeeperStatus(CLD_EXITED, 128 + 9).Describe(), "vmm killed by signal 9");
  EXPECT_EQ(DecodeKeeperStatus(CLD_KILLED, 9).Describe(),
            "vmm keeper killed by signal 9 (the vmm died with it)");
  EXPECT_EQ(DecodeKeeperStatus(CLD_DUMPED, 6).kind, VmmExit::Kind::kKeeperKilled);
  EXPECT_EQ(KeeperReport(-1, 0ms).Describe(),
            "vmm exited (status unknown: adopted after a forkd restart)");
}

// The point of the keeper: a VMM that arms PR_SET_PDEATHSIG (as the jail
// does) survives a crash of the process that spawned it (forkd), and a
// restarted forkd takes its control socket back (pidfd_getfd, as Adopt);
// killing its keeper kills it. This test plays init for the orphans
// (PR_SET_CHILD_SUBREAPER) so it can reap them.
TEST(Keeper, AVmmOutlivesACrashOfItsSpawnerButNotItsKeeper) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  const pid_t spawner = ::fork();
  ASSERT_GE(spawner, 0);
  if (spawner == 0) {
    // "forkd": spawns, sees READY, says who is who, and crashes.
    auto vmm = SpawnScript(
        "exec setpriv --pdeathsig KILL -- /bin/sh -c "
        "'echo READY >&3; read x <&3; echo \"pong $x\" >&3; exec sleep 1000000'");
    if (!vmm.ok() || !vmm->Expect("READY", kHangGuard).ok()) _exit(1);
    const pid_t ids[2] = {vmm->pid(), vmm->keeper_pid()};
    if (::write(wr.get(), ids, sizeof ids) != sizeof ids) _exit(1);
    ::raise(SIGKILL);
    _exit(1);
  }
  wr.reset();
  pid_t ids[2] = {0, 0};
  ASSERT_EQ(::read(rd.get(), ids, sizeof ids), static_cast<ssize_t>(sizeof ids));
  int st = 0;
  ASSERT_EQ(::waitpid(spawner, &st, 0), spawner);
  ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << st;
  const pid_t vmm_pid = ids[0], keeper = ids[1];

  // Alive, and answers whoever takes its control socket back.
  UniqueFd vmm_pidfd(static_cast<int>(::syscall(SYS_pidfd_open, vmm_pid, 0)));
  ASSERT_TRUE(vmm_pidfd) << "the VMM died with its spawner: " << std::strerror(errno);
  auto adopted = VmmChild::Adopt(vmm_pid, vmm_pidfd.get());
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  ASSERT_TRUE(adopted->Send("ping").ok());
  auto pong = adopted->ReadLine(kHangGuard);
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(*pong, "pong ping");

  // Its keeper killed: the VMM goes with it (PR_SET_PDEATHSIG).
  UniqueFd keeper_pidfd(static_cast<int>(::syscall(SYS_pidfd_open, keeper, 0)));
  ASSERT_TRUE(keeper_pidfd) << std::strerror(errno);
  ASSERT_EQ(::syscall(SYS_pidfd_send_signal, keeper_pidfd.get(), SIGKILL, nullptr, 0), 0);
  pollfd pf{vmm_pidfd.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&pf, 1, static_cast<int>(std::chrono::milliseconds(kHangGuard).count())), 1)
      << "the VMM outlived its keeper";
  // Both are this subreaper's now.
  ASSERT_EQ(::waitpid(keeper, &st, 0), keeper);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << st;
  ASSERT_EQ(::waitpid(vmm_pid, &st, 0), vmm_pid);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << st;
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0), 0);
}

}  // namespace
}  // namespace forkd::sandbox
