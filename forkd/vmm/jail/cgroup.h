// The caller's side of a VMM's cgroup (cgroup v2): forkd makes one per VM
// under its own slice (bare metal) or the pod's cgroup (Kubernetes), sets
// the limits, passes it to forkd-vmm (--cgroup), and removes it after the
// VMM is reaped. forkd-vmm only joins it (jail.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd::vmm::jail {

struct CgroupLimits {
  std::optional<uint64_t> memory_max;  // bytes (memory.max)
  std::optional<uint64_t> pids_max;    // tasks (pids.max)
  std::optional<uint32_t> cpu_weight;  // 1..10000 (cpu.weight)
};

// Where cgroup v2 is mounted (from /proc/self/mountinfo).
absl::StatusOr<std::string> Cgroup2Mount();

// Creates `dir` (its parent must exist and delegate the controllers the
// limits need, i.e. list them in cgroup.subtree_control) and writes the
// limits. A controller that is not enabled is an error naming it.
absl::Status CreateCgroup(const std::string& dir, const CgroupLimits& limits);

// Removes `dir`; it must have no processes left (reap the VMM first).
absl::Status RemoveCgroup(const std::string& dir);

// Reads one of the cgroup's files, trimmed ("max", "104857600", ...).
absl::StatusOr<std::string> ReadCgroupFile(const std::string& dir, const std::string& name);

}  // namespace forkd::vmm::jail
