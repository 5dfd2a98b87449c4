#include "forkd/sandbox/vmm_child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "common/errno_status.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace forkd::sandbox {

namespace {

// forkd's descriptors in the keeper (above the VMM's 3 and 4).
constexpr int kKeeperReportFd = 5;
constexpr int kKeeperProcsFd = 6;
// How long a keeper may take to report its VMM (it forks at once) before
// the spawn gives up; a hang guard.
constexpr int kReportWaitMs = 10000;

// Reads the keeper's report: the VMM's pid and a pidfd for it.
absl::StatusOr<std::pair<pid_t, UniqueFd>> ReadReport(int fd) {
  pollfd p{fd, POLLIN, 0};
  int n = 0;
  while ((n = ::poll(&p, 1, kReportWaitMs)) < 0 && errno == EINTR) {
  }
  if (n < 0) return ErrnoStatus(errno, "poll the keeper's report");
  if (n == 0) return absl::DeadlineExceededError("forkd-vmm-keeper never reported its VMM");
  char payload[32] = {};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{payload, sizeof payload - 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t r = 0;
  while ((r = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  if (r < 0) return ErrnoStatus(errno, "read the keeper's report");
  UniqueFd pidfd;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int))) {
      int got = -1;
      std::memcpy(&got, CMSG_DATA(c), sizeof got);
      pidfd = UniqueFd(got);
    }
  }
  if (r == 0) return absl::UnavailableError("forkd-vmm-keeper exited before starting the VMM");
  pid_t pid = 0;
  if (!absl::SimpleAtoi(absl::string_view(payload, static_cast<size_t>(r)), &pid) || pid <= 0 ||
      !pidfd || (msg.msg_flags & MSG_CTRUNC) != 0) {
    return absl::InternalError("forkd-vmm-keeper sent a malformed report");
  }
  return std::make_pair(pid, std::move(pidfd));
}

// The keeper's exit status, for an error message (it is forkd's child).
std::string KeeperOutcome(int keeper_pidfd) {
  siginfo_t si{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(keeper_pidfd), &si, WEXITED) !=
      0) {
    return std::string("wait: ") + std::strerror(errno);
  }
  return si.si_code == CLD_EXITED ? "exit status " + std::to_string(si.si_status)
                                  : "killed by signal " + std::to_string(si.si_status);
}

}  // namespace

std::shared_mutex& ForkLock() {
  static auto* const mu = new std::shared_mutex();
  return *mu;
}

absl::StatusOr<VmmChild> VmmChild::Spawn(const VmmSpawnOptions& options) {
  if (options.keeper.empty()) return absl::InvalidArgumentError("no forkd-vmm-keeper given");
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoStatus(errno, "socketpair for the VMM control channel");
  }
  UniqueFd mine(sv[0]), theirs(sv[1]);
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoStatus(errno, "socketpair for the keeper's report");
  }
  UniqueFd report(sv[0]), keeper_report(sv[1]);
  UniqueFd procs;
  if (!options.cgroup_dir.empty()) {
    const std::string p = options.cgroup_dir + "/cgroup.procs";
    procs = UniqueFd(::open(p.c_str(), O_WRONLY | O_CLOEXEC));
    if (!procs) return ErrnoStatus(errno, "open " + p);
  }
  const bool keep = options.keep_control;
  std::vector<std::string> argv_s = {options.keeper, "--report-fd", std::to_string(kKeeperReportFd),
                                     "--pass-fd", std::to_string(kChildControlFd)};
  if (keep) argv_s.insert(argv_s.end(), {"--pass-fd", std::to_string(kControlKeeperFd)});
  if (procs) argv_s.insert(argv_s.end(), {"--procs-fd", std::to_string(kKeeperProcsFd)});
  argv_s.insert(argv_s.end(), {"--", options.binary});
  argv_s.insert(argv_s.end(), options.args.begin(), options.args.end());
  argv_s.insert(argv_s.end(), {"--control-fd", std::to_string(kChildControlFd), "--serial-out",
                               options.serial_out});
  std::vector<char*> argv;
  argv.reserve(argv_s.size() + 1);
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);

  // From any thread: the keeper arms no parent-death signal (the VMM's
  // follows the keeper, which is single-threaded).
  const int theirs_fd = theirs.get(), mine_fd = mine.get(), report_fd = keeper_report.get(),
            procs_fd = procs.get();
  pid_t pid = -1;
  {
    std::unique_lock no_tap_fds(ForkLock());
    pid = ::fork();
    if (pid == 0) {
      // Child: async-signal-safe calls only. Move the sources above the
      // target range first so dup2 never clobbers one; dup2 clears CLOEXEC
      // (the keeper closes every other descriptor itself).
      const int c = ::fcntl(theirs_fd, F_DUPFD_CLOEXEC, 10);
      const int k = keep ? ::fcntl(mine_fd, F_DUPFD_CLOEXEC, 10) : -1;
      const int r = ::fcntl(report_fd, F_DUPFD_CLOEXEC, 10);
      const int g = procs_fd >= 0 ? ::fcntl(procs_fd, F_DUPFD_CLOEXEC, 10) : -1;
      if (c < 0 || ::dup2(c, kChildControlFd) < 0) _exit(127);
      if (keep && (k < 0 || ::dup2(k, kControlKeeperFd) < 0)) _exit(127);
      if (r < 0 || ::dup2(r, kKeeperReportFd) < 0) _exit(127);
      if (procs_fd >= 0 && (g < 0 || ::dup2(g, kKeeperProcsFd) < 0)) _exit(127);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
  }
  if (pid < 0) return ErrnoStatus(errno, "fork for forkd-vmm-keeper");
  // Our child, not yet reaped: the pid cannot be reused before this.
  UniqueFd keeper_pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!keeper_pidfd) {
    const int err = errno;
    (void)::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return ErrnoStatus(err, "pidfd_open of forkd-vmm-keeper");
  }
  theirs.reset();
  keeper_report.reset();
  procs.reset();
  auto vmm = ReadReport(report.get());
  if (!vmm.ok()) {
    (void)::syscall(SYS_pidfd_send_signal, keeper_pidfd.get(), SIGKILL, nullptr, 0);
    return Annotate(vmm.status(), "spawn " + options.binary + " under " + options.keeper +
                                      " (keeper " + KeeperOutcome(keeper_pidfd.get()) + ")");
  }
  VmmChild child(vmm->first, std::move(mine));
  child.pidfd_ = std::move(vmm->second);
  child.keeper_pid_ = pid;
  child.keeper_pidfd_ = std::move(keeper_pidfd);
  return child;
}

absl::Status VmmChild::KillAndReap() {
  absl::Status first;
  if (pidfd_ && ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0) != 0 &&
      errno != ESRCH) {
    first = ErrnoStatus(errno, "kill VMM " + std::to_string(pid_));
  }
  pidfd_.reset();
  if (keeper_pidfd_) {
    // It exits once it has reaped the VMM.
    siginfo_t si{};
    while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(keeper_pidfd_.get()), &si,
                    WEXITED) != 0) {
      if (errno == EINTR) continue;
      if (first.ok()) first = ErrnoStatus(errno, "reap keeper " + std::to_string(keeper_pid_));
      break;
    }
    keeper_pidfd_.reset();
  }
  return first;
}

absl::StatusOr<VmmChild> VmmChild::Adopt(pid_t pid, int pidfd) {
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, kControlKeeperFd, 0)));
  if (!fd) return ErrnoStatus(errno, "pidfd_getfd control socket of VMM " + std::to_string(pid));
  (void)::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  return VmmChild(pid, std::move(fd));
}

absl::Status VmmChild::Send(const std::string& line) const {
  const std::string l = line + "\n";
  size_t off = 0;
  while (off < l.size()) {
    const ssize_t n = ::send(control_.get(), l.data() + off, l.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "send '" + line + "' to VMM " + std::to_string(pid_));
    }
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> VmmChild::ReadLine(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (const size_t nl = buf_.find('\n'); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return absl::DeadlineExceededError("VMM " + std::to_string(pid_) + " sent no control line");
    }
    pollfd p{control_.get(), POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "poll VMM control");
    }
    if (r == 0) continue;
    char tmp[512];
    const ssize_t n = ::read(control_.get(), tmp, sizeof tmp);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read VMM control");
    }
    if (n == 0) return absl::UnavailableError("VMM " + std::to_string(pid_) + " exited");
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

absl::Status VmmChild::Expect(const std::string& want, std::chrono::milliseconds timeout,
                              const std::string& serial_log) {
  auto line = ReadLine(timeout);
  if (line.ok() && *line == want) return absl::OkStatus();
  std::string msg = "forkd-vmm answered '" +
                    (line.ok() ? *line : std::string(line.status().message())) + "' instead of " +
                    want;
  if (!serial_log.empty()) msg += "; serial: " + FileTail(serial_log);
  return absl::InternalError(msg);
}

std::string FileTail(const std::string& path, size_t max_bytes) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > max_bytes) s = s.substr(s.size() - max_bytes);
  return s;
}

}  // namespace forkd::sandbox
