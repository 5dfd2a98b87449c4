#include "forkd/sandbox/vmm_exit.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace forkd::sandbox {

std::string VmmExit::Describe() const {
  switch (kind) {
    case Kind::kExited:
      return "vmm exited with status " + std::to_string(value);
    case Kind::kKilled:
      return "vmm killed by signal " + std::to_string(value);
    case Kind::kKeeperKilled:
      return "vmm keeper killed by signal " + std::to_string(value) + " (the vmm died with it)";
    case Kind::kUnknown:
      break;
  }
  return "vmm exited (status unknown: adopted after a forkd restart)";
}

VmmExit DecodeKeeperStatus(int code, int status) {
  if (code != CLD_EXITED) return {VmmExit::Kind::kKeeperKilled, status};
  if (status > 128 && status < 128 + NSIG) return {VmmExit::Kind::kKilled, status - 128};
  return {VmmExit::Kind::kExited, status};
}

VmmExit KeeperReport(int keeper_pidfd, std::chrono::milliseconds wait) {
  if (keeper_pidfd < 0) return {};
  pollfd p{keeper_pidfd, POLLIN, 0};
  int n = 0;
  while ((n = ::poll(&p, 1, static_cast<int>(wait.count()))) < 0 && errno == EINTR) {
  }
  if (n <= 0) return {};
  siginfo_t si{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(keeper_pidfd), &si,
               WEXITED | WNOHANG | WNOWAIT) != 0 ||
      si.si_pid == 0) {
    return {};
  }
  return DecodeKeeperStatus(si.si_code, si.si_status);
}

}  // namespace forkd::sandbox
