#include "tests/vmm/vmm_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string_view>

#include "common/errno_status.h"
#include "kernel-stage/digest.h"

namespace forkd::vmm::testing {
namespace {
constexpr int kChildControlFd = 3, kChildSerialOutFd = 4, kChildSerialInFd = 5;

bool Has(const std::vector<std::string>& args, std::string_view flag) {
  return std::find(args.begin(), args.end(), flag) != args.end();
}

// The value after `flag`, if any.
std::optional<std::string> ValueOf(const std::vector<std::string>& args, std::string_view flag) {
  auto it = std::find(args.begin(), args.end(), flag);
  if (it == args.end() || it + 1 == args.end()) return std::nullopt;
  return *(it + 1);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> PinArgsFor(const std::vector<std::string>& args) {
  const auto kernel = ValueOf(args, "--kernel");
  if (!kernel || Has(args, "--kernel-sha256") || Has(args, "--insecure-skip-guest-verify")) {
    return std::vector<std::string>{};
  }
  FORKD_ASSIGN_OR_RETURN(kernel_stage::Sha256Digest k, kernel_stage::HashFile(*kernel));
  std::vector<std::string> pin = {"--kernel-sha256", kernel_stage::HexDigest(k)};
  if (const auto initrd = ValueOf(args, "--initrd"); initrd && !Has(args, "--initrd-sha256")) {
    FORKD_ASSIGN_OR_RETURN(kernel_stage::Sha256Digest i, kernel_stage::HashFile(*initrd));
    pin.insert(pin.end(), {"--initrd-sha256", kernel_stage::HexDigest(i)});
  }
  return pin;
}

absl::StatusOr<std::unique_ptr<VmmProcess>> VmmProcess::Spawn(
    const std::vector<std::string>& args) {
  return SpawnBinary(ForkdVmmPath(), args);
}

absl::StatusOr<std::unique_ptr<VmmProcess>> VmmProcess::SpawnBinary(
    const std::string& binary, const std::vector<std::string>& args) {
  std::unique_ptr<VmmProcess> p(new VmmProcess());
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoStatus(errno, "socketpair");
  }
  p->control_ = UniqueFd(sv[0]);
  UniqueFd child_control(sv[1]);

  std::vector<std::string> argv_s = {binary};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  // Seccomp stays on (every kvm test runs filtered). The jail needs a
  // per-VM root, ids and snapshot files the jail uid can read, so only the
  // tests that ask for it (--jail-root, see JailArgs) run jailed; the rest
  // say --no-jail explicitly, as forkd-vmm demands.
  const bool jailed = std::find(args.begin(), args.end(), "--jail-root") != args.end();
  const bool no_jail = std::find(args.begin(), args.end(), "--no-jail") != args.end();
  if (!jailed && !no_jail) argv_s.push_back("--no-jail");
  FORKD_ASSIGN_OR_RETURN(std::vector<std::string> pin, PinArgsFor(args));
  argv_s.insert(argv_s.end(), pin.begin(), pin.end());
  for (auto [flag, fd] :
       {std::pair{"--control-fd", kChildControlFd}, std::pair{"--serial-out", kChildSerialOutFd},
        std::pair{"--serial-in", kChildSerialInFd}}) {
    argv_s.push_back(flag);
    argv_s.push_back(std::to_string(fd));
  }
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);

  const int control = child_control.get(), out = p->out_->write_fd(), in = p->in_.read.get();
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  if (pid == 0) {
    // Child: only async-signal-safe calls. dup2 clears CLOEXEC on the copies.
    // Move sources out of the 3..5 range first so dup2 never clobbers one.
    int c = ::fcntl(control, F_DUPFD_CLOEXEC, 10), o = ::fcntl(out, F_DUPFD_CLOEXEC, 10),
        i = ::fcntl(in, F_DUPFD_CLOEXEC, 10);
    if (c < 0 || o < 0 || i < 0 || ::dup2(c, kChildControlFd) < 0 ||
        ::dup2(o, kChildSerialOutFd) < 0 || ::dup2(i, kChildSerialInFd) < 0) {
      _exit(127);
    }
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  p->pid_ = pid;
  return p;
}

VmmProcess::~VmmProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    Wait();
  }
}

absl::Status VmmProcess::SnapshotAndStop(const std::string& dir) {
  Send("SNAPSHOT " + dir);
  if (auto r = ReadLine(); r != "OK") {
    return absl::InternalError("SNAPSHOT " + dir + " answered '" + r.value_or("<none>") +
                               "'; serial:\n" + out_->text());
  }
  Send("STOP");
  if (auto r = ReadLine(); r != "EXIT stopped: host request") {
    return absl::InternalError("STOP answered '" + r.value_or("<none>") + "'");
  }
  if (const int code = Wait(); code != 0) {
    return absl::InternalError("forkd-vmm exited with " + std::to_string(code) + " after STOP");
  }
  return absl::OkStatus();
}

void VmmProcess::Send(const std::string& line) const {
  std::string l = line + "\n";
  (void)!::write(control_.get(), l.data(), l.size());
}

std::optional<std::string> VmmProcess::ReadLine() {
  while (true) {
    size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    pollfd pfd{control_.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(kHangGuard.count() * 1000));
    if (r <= 0) return std::nullopt;
    char tmp[256];
    ssize_t n = ::read(control_.get(), tmp, sizeof tmp);
    if (n <= 0) return std::nullopt;
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

int VmmProcess::Wait() {
  if (pid_ <= 0) return -1;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

}  // namespace forkd::vmm::testing
