// forkd-vmm-keeper: the parent of one forkd-vmm (README.md beside this file).
//
//   forkd-vmm-keeper --report-fd N [--procs-fd N] [--pass-fd N]... -- VMM [ARG]...
//
// forkd forks and execs this program (in its own session, with no
// parent-death signal); it forks and execs VMM with the --pass-fd
// descriptors and 0-2, sends forkd the VMM's pid and a pidfd for it over
// --report-fd (SCM_RIGHTS), and then only waits: it exits with the VMM's
// exit status N, or 128+S when a signal S killed it. The jailed VMM's
// PR_SET_PDEATHSIG follows this process, not forkd, so a VMM outlives a
// crash of forkd (and is adopted by the next start) but not its keeper.
//
// Before the VMM exists the keeper's own failures exit kKeeperFailed (125)
// after a message on stderr; the VMM child exits 127 when the exec fails.
// It is deliberately small and uses only the C library: one per VM.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int kKeeperFailed = 125;
constexpr int kExecFailed = 127;
constexpr int kMaxPass = 8;
// The signals the keeper ignores (a terminal's hangup or ^C, a closed pipe
// are not reasons to kill a VM); the VMM gets back what forkd gave us.
constexpr std::array<int, 3> kIgnored = {SIGHUP, SIGINT, SIGPIPE};

[[noreturn]] void Fail(const char* what) {
  (void)std::fprintf(stderr, "forkd-vmm-keeper: %s: %s\n", what, std::strerror(errno));
  _exit(kKeeperFailed);
}

[[noreturn]] void Usage(const char* what) {
  (void)std::fprintf(stderr,
                     "forkd-vmm-keeper: %s\nusage: forkd-vmm-keeper --report-fd N [--procs-fd N] "
                     "[--pass-fd N]... -- VMM [ARG]...\n",
                     what);
  _exit(kKeeperFailed);
}

int ParseFd(const char* s) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 3 || v > INT_MAX)
    Usage("bad descriptor number");
  return static_cast<int>(v);
}

// Closes every descriptor but 0-2 and `keep` (sorted).
void CloseAllBut(int* keep, int n) {
  std::sort(keep, keep + n);
  unsigned lo = 3;
  for (int i = 0; i < n; i++) {
    const auto k = static_cast<unsigned>(keep[i]);
    if (k > lo && ::syscall(SYS_close_range, lo, k - 1, 0) != 0) Fail("close_range");
    lo = std::max(lo, k + 1);
  }
  if (::syscall(SYS_close_range, lo, ~0U, 0) != 0) Fail("close_range");
}

void SendVmm(int report_fd, pid_t vmm, int pidfd) {
  char payload[32];
  const int len = std::snprintf(payload, sizeof payload, "%d", static_cast<int>(vmm));
  iovec iov{payload, static_cast<size_t>(len)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &pidfd, sizeof(int));
  while (::sendmsg(report_fd, &msg, MSG_NOSIGNAL) < 0) {
    // forkd gone before it heard of the VMM: the VMM is still ours to wait for.
    if (errno != EINTR) return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  int report_fd = -1, procs_fd = -1;
  int pass[kMaxPass];
  int npass = 0;
  int i = 1;
  for (; i < argc; i++) {
    const char* a = argv[i];
    if (std::strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (i + 1 >= argc) Usage("missing value");
    if (std::strcmp(a, "--report-fd") == 0) {
      report_fd = ParseFd(argv[++i]);
    } else if (std::strcmp(a, "--procs-fd") == 0) {
      procs_fd = ParseFd(argv[++i]);
    } else if (std::strcmp(a, "--pass-fd") == 0) {
      if (npass == kMaxPass) Usage("too many --pass-fd");
      pass[npass++] = ParseFd(argv[++i]);
    } else {
      Usage("unknown flag");
    }
  }
  if (report_fd < 0) Usage("--report-fd is required");
  if (i >= argc) Usage("no VMM to run");
  char** vmm_argv = argv + i;

  // Nothing ties this process to forkd: no parent-death signal, its own
  // session and process group (signals for forkd's group are not for VMs).
  if (::prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) != 0) Fail("PR_SET_PDEATHSIG");
  if (::setsid() < 0 && errno != EPERM) Fail("setsid");  // EPERM: already a session leader
  struct sigaction given[kIgnored.size()];
  sigset_t given_mask, none;
  sigemptyset(&none);
  if (::sigprocmask(SIG_SETMASK, &none, &given_mask) != 0) Fail("sigprocmask");
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  for (size_t s = 0; s < kIgnored.size(); s++) {
    if (::sigaction(kIgnored[s], &ign, &given[s]) != 0) Fail("sigaction");
  }
  int keep[kMaxPass + 2];
  int nkeep = 0;
  for (int p = 0; p < npass; p++) keep[nkeep++] = pass[p];
  keep[nkeep++] = report_fd;
  if (procs_fd >= 0) keep[nkeep++] = procs_fd;
  CloseAllBut(keep, nkeep);
  for (int p = 0; p < npass; p++) {
    if (::fcntl(pass[p], F_SETFD, 0) != 0) Fail("fcntl --pass-fd");
  }
  if (::fcntl(report_fd, F_SETFD, FD_CLOEXEC) != 0) Fail("fcntl --report-fd");
  if (procs_fd >= 0 && ::fcntl(procs_fd, F_SETFD, FD_CLOEXEC) != 0) Fail("fcntl --procs-fd");

  const pid_t vmm = ::fork();
  if (vmm < 0) Fail("fork");
  if (vmm == 0) {
    // The VMM: forkd's signal state, its cgroup before exec, then exec.
    for (size_t s = 0; s < kIgnored.size(); s++) (void)::sigaction(kIgnored[s], &given[s], nullptr);
    (void)::sigprocmask(SIG_SETMASK, &given_mask, nullptr);
    if (procs_fd >= 0 && ::write(procs_fd, "0", 1) != 1) {
      (void)std::fprintf(stderr, "forkd-vmm-keeper: join the VM's cgroup: %s\n",
                         std::strerror(errno));
      _exit(kExecFailed);
    }
    ::execv(vmm_argv[0], vmm_argv);
    (void)std::fprintf(stderr, "forkd-vmm-keeper: exec %s: %s\n", vmm_argv[0],
                       std::strerror(errno));
    _exit(kExecFailed);
  }
  // Our child is not reaped before we wait for it: its pid is stable here.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, vmm, 0));
  if (pidfd < 0) {
    // forkd could not tell this VMM from a recycled pid: it must not run.
    const int err = errno;
    (void)::kill(vmm, SIGKILL);
    while (::waitpid(vmm, nullptr, 0) < 0 && errno == EINTR) {
    }
    errno = err;
    Fail("pidfd_open of the VMM");
  }
  SendVmm(report_fd, vmm, pidfd);
  ::close(pidfd);
  // Hold nothing of the VMM's: its control socket must reach EOF when it
  // exits, and the cgroup's procs file is forkd's.
  ::close(report_fd);
  if (procs_fd >= 0) ::close(procs_fd);
  for (int p = 0; p < npass; p++) ::close(pass[p]);

  int status = 0;
  while (::waitpid(vmm, &status, 0) < 0) {
    if (errno != EINTR) Fail("waitpid");
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}
