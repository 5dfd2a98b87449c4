// The kinds of thread in a forkd-vmm process, each with its own seccomp
// allow-list (allow_list.h).
#pragma once

#include <array>
#include <optional>
#include <string_view>

namespace forkd::vmm::seccomp {

enum class ThreadKind {
  kVcpu,     // runs KVM_RUN and handles exits (port I/O, MMIO) synchronously
  kDevice,   // queue notifier, vsock muxer, net pump, serial input pump
  kControl,  // main thread, control-protocol reader, signal waiter
};

inline constexpr std::array<ThreadKind, 3> kThreadKinds = {ThreadKind::kVcpu, ThreadKind::kDevice,
                                                           ThreadKind::kControl};

const char* ThreadKindName(ThreadKind kind);
std::optional<ThreadKind> ParseThreadKind(std::string_view name);

}  // namespace forkd::vmm::seccomp
