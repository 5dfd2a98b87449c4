#include "forkd/sandbox/vmm_child.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/errno_status.h"

namespace forkd::sandbox {

namespace {

// The one thread every VMM is forked from. A jailed forkd-vmm arms
// PR_SET_PDEATHSIG, which the kernel fires when the *thread* that forked it
// ends, not the process: forked from a gRPC or Fork worker thread, a VMM
// would be killed when that thread retires. This thread lives as long as
// forkd (it is never joined; the process exit ends it).
class SpawnThread {
 public:
  static SpawnThread& Get() {
    static auto* const t = new SpawnThread();  // never destroyed: outlives every caller
    return *t;
  }
  // Runs `fn` on the spawn thread and returns its result (and its errno).
  pid_t Run(const std::function<pid_t()>& fn) {
    pid_t result = -1;
    int err = 0;
    bool done = false;
    std::unique_lock lock(mu_);
    queue_.push_back(Work{[&] {
                            result = fn();
                            err = errno;
                          },
                          &done});
    cv_.notify_all();
    done_cv_.wait(lock, [&] { return done; });
    errno = err;
    return result;
  }

 private:
  struct Work {
    std::function<void()> fn;
    bool* done;
  };
  SpawnThread() {
    std::thread([this] { Loop(); }).detach();
  }
  [[noreturn]] void Loop() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return !queue_.empty(); });
      Work work = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      work.fn();
      lock.lock();
      *work.done = true;
      done_cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<Work> queue_;
};

}  // namespace

std::shared_mutex& ForkLock() {
  static auto* const mu = new std::shared_mutex();
  return *mu;
}

absl::StatusOr<VmmChild> VmmChild::Spawn(const VmmSpawnOptions& options) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoStatus(errno, "socketpair for the VMM control channel");
  }
  UniqueFd mine(sv[0]), theirs(sv[1]);
  UniqueFd procs;
  if (!options.cgroup_dir.empty()) {
    const std::string p = options.cgroup_dir + "/cgroup.procs";
    procs = UniqueFd(::open(p.c_str(), O_WRONLY | O_CLOEXEC));
    if (!procs) return ErrnoStatus(errno, "open " + p);
  }
  std::vector<std::string> argv_s = {options.binary};
  argv_s.insert(argv_s.end(), options.args.begin(), options.args.end());
  argv_s.insert(argv_s.end(), {"--control-fd", std::to_string(kChildControlFd), "--serial-out",
                               options.serial_out});
  std::vector<char*> argv;
  argv.reserve(argv_s.size() + 1);
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);

  const int theirs_fd = theirs.get(), mine_fd = mine.get(), procs_fd = procs.get();
  const bool keep = options.keep_control;
  const pid_t pid = SpawnThread::Get().Run([&]() -> pid_t {
    std::unique_lock no_tap_fds(ForkLock());
    const pid_t p = ::fork();
    if (p != 0) return p;
    // Child: async-signal-safe calls only. Move the sources above the target
    // range first so dup2 never clobbers one; dup2 clears CLOEXEC.
    const int c = ::fcntl(theirs_fd, F_DUPFD_CLOEXEC, 10);
    const int k = keep ? ::fcntl(mine_fd, F_DUPFD_CLOEXEC, 10) : -1;
    if (c < 0 || ::dup2(c, kChildControlFd) < 0) _exit(127);
    if (keep && (k < 0 || ::dup2(k, kControlKeeperFd) < 0)) _exit(127);
    if (procs_fd >= 0 && ::write(procs_fd, "0", 1) != 1) _exit(126);
    ::setsid();  // not in forkd's process group: a terminal's ^C is not for VMs
    ::execv(argv[0], argv.data());
    _exit(127);
  });
  if (pid < 0) return ErrnoStatus(errno, "fork for forkd-vmm");
  return VmmChild(pid, std::move(mine));
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
