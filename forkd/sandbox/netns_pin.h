// Network namespaces forkd creates for sandboxes that were not given one.
// Each is pinned by a bind mount of its nsfs inode on a file (as `ip netns
// add` does), so it outlives a forkd restart, a restarted forkd finds it by
// path, and forkd-vmm joins it by path (--net-netns).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::sandbox {

// Creates a fresh namespace, pins it at `path` (a file that must not exist)
// and returns a handle to it. On error nothing is left at `path`.
absl::StatusOr<UniqueFd> CreatePinnedNetns(const std::string& path);

// Unmounts and removes the pin; the namespace goes away with its last user.
// A missing pin is OK.
absl::Status RemovePinnedNetns(const std::string& path);

// True when `path` is a mounted network namespace (nsfs of type CLONE_NEWNET).
bool IsNetnsPath(const std::string& path);

}  // namespace forkd::sandbox
