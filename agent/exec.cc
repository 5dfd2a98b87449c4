#include "agent/exec.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/framing.h"
#include "agent/protocol.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::agent {
namespace {

// After the command is gone, descendants that escaped the process group (setsid)
// may still hold the output pipes; stop reading them after this long.
constexpr std::chrono::milliseconds kDrainGrace{1000};
constexpr size_t kReadChunk = 64 * 1024;

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

absl::StatusOr<Pipe> MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

absl::Status SetNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoStatus(errno, "fcntl O_NONBLOCK");
  }
  return absl::OkStatus();
}

// One output stream: keeps the first `cap` bytes, discards the rest.
struct Output {
  UniqueFd fd;
  std::string data;
  bool truncated = false;

  // Reads what is there now; closes the stream at EOF.
  void ReadAvailable(size_t cap) {
    char buf[kReadChunk];
    for (;;) {
      const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) {  // EOF, or an error we cannot recover from: either way, done.
        fd.reset();
        return;
      }
      const size_t keep = std::min(static_cast<size_t>(n), cap - std::min(cap, data.size()));
      data.append(buf, keep);
      if (keep < static_cast<size_t>(n)) truncated = true;
    }
  }
};

// write() to the command's stdin without SIGPIPE when it stopped reading:
// SIGPIPE from write() is directed at the calling thread, so blocking it here
// and discarding the pending one afterwards leaves the rest of the process
// untouched (the agent ignores SIGPIPE anyway; a library must not rely on it).
ssize_t WriteWithoutSigpipe(int fd, const char* data, size_t len) {
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  (void)pthread_sigmask(SIG_BLOCK, &pipe_only, &old);  // cannot fail with a valid set
  const ssize_t n = ::write(fd, data, len);
  const int err = errno;
  if (n < 0 && err == EPIPE && !sigismember(&old, SIGPIPE)) {
    const timespec zero{};
    while (::sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  (void)pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return n;
}

// Spawns the command; everything that must happen between fork and exec is
// expressed as posix_spawn attributes so no code of ours runs in the child.
absl::StatusOr<pid_t> Spawn(const v1::ExecRequest& req, int in_fd, int out_fd, int err_fd) {
  std::vector<char*> argv;
  for (const auto& a : req.argv()) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : req.env()) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  if (int e = posix_spawn_file_actions_init(&fa); e != 0) return ErrnoStatus(e, "spawn actions");
  if (int e = posix_spawnattr_init(&attr); e != 0) {
    posix_spawn_file_actions_destroy(&fa);
    return ErrnoStatus(e, "spawn attributes");
  }
  const std::string cwd = req.cwd().empty() ? "/" : req.cwd();
  int err = posix_spawn_file_actions_adddup2(&fa, in_fd, STDIN_FILENO);
  if (err == 0) err = posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
  if (err == 0) err = posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO);
  if (err == 0) err = posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  // Own process group, so a timeout can kill everything the command started.
  if (err == 0) err = posix_spawnattr_setpgroup(&attr, 0);
  // The agent ignores SIGPIPE and may block signals; the command must not inherit that.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  if (err == 0) err = posix_spawnattr_setsigmask(&attr, &none);
  if (err == 0) err = posix_spawnattr_setsigdefault(&attr, &all);
  if (err == 0) {
    err = posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  pid_t pid = -1;
  const char* what = "posix_spawn setup";
  if (err == 0) {
    what = "spawn";
    err = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return ErrnoStatus(err, absl::StrCat(what, " ", req.argv(0), " in ", cwd));
  return pid;
}

}  // namespace

v1::ExecResponse RunExec(const v1::ExecRequest& req) {
  v1::ExecResponse resp;
  const auto start = Clock::now();
  auto fail = [&](const absl::Status& s) {
    resp.set_error(std::string(ToStd(s.message())));
    resp.set_duration_ns(std::chrono::nanoseconds(Clock::now() - start).count());
    return resp;
  };
  if (req.argv_size() == 0 || req.argv(0).empty()) {
    return fail(absl::InvalidArgumentError("argv is empty"));
  }
  const size_t cap = (req.max_output_bytes() == 0 || req.max_output_bytes() > kMaxExecOutputBytes)
                         ? kMaxExecOutputBytes
                         : req.max_output_bytes();
  const auto timeout =
      req.timeout_ms() == 0 ? kDefaultExecTimeout : std::chrono::milliseconds(req.timeout_ms());
  const Deadline deadline = start + timeout;

  auto in = MakePipe();
  auto out = MakePipe();
  auto err = MakePipe();
  if (!in.ok()) return fail(in.status());
  if (!out.ok()) return fail(out.status());
  if (!err.ok()) return fail(err.status());
  for (int fd : {in->write.get(), out->read.get(), err->read.get()}) {
    if (auto s = SetNonBlocking(fd); !s.ok()) return fail(s);
  }

  auto spawned = Spawn(req, in->read.get(), out->write.get(), err->write.get());
  if (!spawned.ok()) return fail(spawned.status());
  const pid_t pid = *spawned;
  // The child holds its own copies; ours must go so EOF arrives when it exits.
  in->read.reset();
  out->write.reset();
  err->write.reset();

  // Raw syscall: glibc 2.36's <sys/pidfd.h> lacks C linkage for C++ callers.
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    const int e = errno;
    (void)::kill(-pid, SIGKILL);
    (void)::waitpid(pid, nullptr, 0);
    return fail(ErrnoStatus(e, "pidfd_open"));
  }

  Output stdout_stream{.fd = std::move(out->read)};
  Output stderr_stream{.fd = std::move(err->read)};
  UniqueFd stdin_fd = std::move(in->write);
  const std::string& input = req.stdin();
  size_t input_sent = 0;
  if (input.empty()) stdin_fd.reset();

  bool exited = false;
  int wait_status = 0;
  Deadline drain_deadline = Deadline::max();
  auto reap = [&] {
    // SIGKILL of the group also ends anything the command left behind.
    (void)::kill(-pid, SIGKILL);
    while (::waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
    }
    exited = true;
    pidfd.reset();
    drain_deadline = Clock::now() + kDrainGrace;
  };

  while (!exited || stdout_stream.fd.valid() || stderr_stream.fd.valid()) {
    const auto now = Clock::now();
    if (!exited && now >= deadline) {
      resp.set_timed_out(true);
      reap();
      continue;
    }
    if (exited && now >= drain_deadline) break;
    std::vector<pollfd> pfds;
    enum Slot { kIn, kOut, kErr, kPid };
    std::vector<Slot> slots;
    auto watch = [&](const UniqueFd& fd, short events, Slot slot) {
      if (!fd.valid()) return;
      pfds.push_back({.fd = fd.get(), .events = events, .revents = 0});
      slots.push_back(slot);
    };
    watch(stdin_fd, POLLOUT, kIn);
    watch(stdout_stream.fd, POLLIN, kOut);
    watch(stderr_stream.fd, POLLIN, kErr);
    watch(pidfd, POLLIN, kPid);
    const Deadline until = exited ? drain_deadline : deadline;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
    const int n =
        ::poll(pfds.data(), pfds.size(), static_cast<int>(std::min<int64_t>(left, INT_MAX)));
    if (n < 0) {
      if (errno == EINTR) continue;
      const auto s = ErrnoStatus(errno, "poll");
      reap();
      return fail(s);
    }
    for (size_t i = 0; i < pfds.size(); ++i) {
      if (pfds[i].revents == 0) continue;
      switch (slots[i]) {
        case kIn: {
          const ssize_t w = WriteWithoutSigpipe(stdin_fd.get(), input.data() + input_sent,
                                                input.size() - input_sent);
          if (w > 0) input_sent += static_cast<size_t>(w);
          // EPIPE: the command stopped reading; it owes us nothing more.
          if ((w < 0 && errno != EAGAIN && errno != EINTR) || input_sent == input.size()) {
            stdin_fd.reset();
          }
          break;
        }
        case kOut:
          stdout_stream.ReadAvailable(cap);
          break;
        case kErr:
          stderr_stream.ReadAvailable(cap);
          break;
        case kPid:
          stdin_fd.reset();
          reap();
          break;
      }
    }
  }

  if (WIFEXITED(wait_status)) {
    resp.set_exit_code(WEXITSTATUS(wait_status));
  } else if (WIFSIGNALED(wait_status)) {
    resp.set_signal(WTERMSIG(wait_status));
  }
  resp.set_stdout(std::move(stdout_stream.data));
  resp.set_stderr(std::move(stderr_stream.data));
  resp.set_stdout_truncated(stdout_stream.truncated);
  resp.set_stderr_truncated(stderr_stream.truncated);
  resp.set_duration_ns(std::chrono::nanoseconds(Clock::now() - start).count());
  return resp;
}

}  // namespace forkd::agent
