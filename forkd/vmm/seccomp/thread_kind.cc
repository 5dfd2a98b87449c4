#include "forkd/vmm/seccomp/thread_kind.h"

namespace forkd::vmm::seccomp {

const char* ThreadKindName(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kVcpu:
      return "vcpu";
    case ThreadKind::kDevice:
      return "device";
    case ThreadKind::kControl:
      return "control";
  }
  return "unknown";
}

std::optional<ThreadKind> ParseThreadKind(std::string_view name) {
  for (ThreadKind k : kThreadKinds) {
    if (std::string_view(ThreadKindName(k)) == name) return k;
  }
  return std::nullopt;
}

}  // namespace forkd::vmm::seccomp
