// How a VM ended, and the latch that records the first reason. Whoever ends
// the VM (a vCPU exit, a device such as the i8042, the host) sets the latch
// once; later reasons are ignored, so a VM has exactly one exit status.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace forkd::vmm {

enum class ExitKind {
  kStopped,        // the host asked the VM to stop
  kReset,          // guest reset (i8042 0xfe, KVM_SYSTEM_EVENT_RESET)
  kShutdown,       // triple fault (KVM_EXIT_SHUTDOWN) or guest power-off
  kInternalError,  // KVM_EXIT_INTERNAL_ERROR (e.g. an emulation failure)
  kFailEntry,      // KVM_EXIT_FAIL_ENTRY
  kError,          // anything else: ioctl failure, unknown exit reason
};

std::string_view ExitKindName(ExitKind k);

struct VmExit {
  ExitKind kind = ExitKind::kStopped;
  std::string detail;
  // "reset", "shutdown: triple fault", "error: ..." (the control protocol).
  std::string ToString() const;
};

class ExitLatch {
 public:
  // Returns true when this call recorded the exit (it was the first).
  bool Set(VmExit e);
  bool is_set() const;
  std::optional<VmExit> Get() const;
  // Blocks until set; false on timeout.
  bool WaitFor(std::chrono::milliseconds timeout) const;
  void Wait() const;

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::optional<VmExit> exit_;
};

}  // namespace forkd::vmm
