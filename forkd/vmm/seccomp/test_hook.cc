#include "forkd/vmm/seccomp/test_hook.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace forkd::vmm::seccomp {
namespace {
std::atomic<int> forbidden_kind{-1};
}

void SetForbiddenAttempt(ThreadKind kind) { forbidden_kind = static_cast<int>(kind); }

const char* ForbiddenAttemptName(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kVcpu:
      return "openat";  // a vCPU thread never opens a file
    case ThreadKind::kDevice:
      return "socket";  // AF_INET: the muxer may only make unix sockets
    case ThreadKind::kControl:
      return "execve";  // nothing may start a program
  }
  return "";
}

void AttemptForbiddenCall(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kVcpu:
      (void)::syscall(SYS_openat, AT_FDCWD, "/", O_RDONLY | O_CLOEXEC);
      break;
    case ThreadKind::kDevice:
      (void)::syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
      break;
    case ThreadKind::kControl: {
      const char* argv[] = {"/bin/true", nullptr};
      (void)::syscall(SYS_execve, "/bin/true", argv, nullptr);
      break;
    }
  }
}

}  // namespace forkd::vmm::seccomp

extern "C" void forkd_vmm_seccomp_test_hook(int kind) {
  using forkd::vmm::seccomp::ThreadKind;
  int expected = kind;
  // Only the first thread of that kind attempts it.
  if (forkd::vmm::seccomp::forbidden_kind.compare_exchange_strong(expected, -1)) {
    forkd::vmm::seccomp::AttemptForbiddenCall(static_cast<ThreadKind>(kind));
  }
}
