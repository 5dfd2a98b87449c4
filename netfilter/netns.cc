#include "netfilter/netns.h"

#include <fcntl.h>
#include <sched.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/errno_status.h"

namespace forkd::netfilter {
namespace {

// A thread that cannot get back to its own namespace would do everything
// afterwards on a sandbox's network: stop the process instead.
[[noreturn]] void DieStrandedInNetns(int err) {
  (void)std::fprintf(stderr, "forkd: cannot return to the original network namespace: %s\n",
                     std::strerror(err));
  std::abort();
}

}  // namespace

absl::StatusOr<UniqueFd> OpenNetns(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open network namespace " + path);
  return fd;
}

absl::StatusOr<UniqueFd> CurrentNetns() { return OpenNetns("/proc/thread-self/ns/net"); }

absl::StatusOr<UniqueFd> CreateNetns() {
  FORKD_ASSIGN_OR_RETURN(UniqueFd original, CurrentNetns());
  if (::unshare(CLONE_NEWNET) != 0) return ErrnoStatus(errno, "unshare(CLONE_NEWNET)");
  auto created = CurrentNetns();
  if (::setns(original.get(), CLONE_NEWNET) != 0) DieStrandedInNetns(errno);
  return created;
}

absl::StatusOr<NetnsGuard> NetnsGuard::Enter(int target) {
  if (target < 0) return NetnsGuard(UniqueFd());
  FORKD_ASSIGN_OR_RETURN(UniqueFd original, CurrentNetns());
  if (::setns(target, CLONE_NEWNET) != 0) return ErrnoStatus(errno, "setns into network namespace");
  return NetnsGuard(std::move(original));
}

NetnsGuard::~NetnsGuard() {
  if (!original_) return;
  if (::setns(original_.get(), CLONE_NEWNET) != 0) DieStrandedInNetns(errno);
}

}  // namespace forkd::netfilter
