#include "forkd/vmm/vm_exit.h"

namespace forkd::vmm {

std::string_view ExitKindName(ExitKind k) {
  switch (k) {
    case ExitKind::kStopped:
      return "stopped";
    case ExitKind::kReset:
      return "reset";
    case ExitKind::kShutdown:
      return "shutdown";
    case ExitKind::kInternalError:
      return "internal-error";
    case ExitKind::kFailEntry:
      return "fail-entry";
    case ExitKind::kError:
      return "error";
  }
  return "unknown";
}

std::string VmExit::ToString() const {
  std::string s(ExitKindName(kind));
  if (!detail.empty()) s += ": " + detail;
  return s;
}

bool ExitLatch::Set(VmExit e) {
  {
    std::lock_guard lock(mu_);
    if (exit_) return false;
    exit_ = std::move(e);
  }
  cv_.notify_all();
  return true;
}

bool ExitLatch::is_set() const {
  std::lock_guard lock(mu_);
  return exit_.has_value();
}

std::optional<VmExit> ExitLatch::Get() const {
  std::lock_guard lock(mu_);
  return exit_;
}

bool ExitLatch::WaitFor(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [this] { return exit_.has_value(); });
}

void ExitLatch::Wait() const {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return exit_.has_value(); });
}

}  // namespace forkd::vmm
