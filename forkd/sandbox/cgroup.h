// forkd's cgroup v2 placement of each VMM: a cgroup per VM, made by forkd
// under a parent (the Fork's cgroup_path when it names one, else forkd's
// own parent, --vmm-cgroup-parent, default <cgroup2 mount>/forkd.slice),
// limited with memory.max, pids.max and cpu.weight, the VMM moved into it
// before exec (forkd/sandbox/vmm_child.h), and removed once the VMM is
// reaped (Terminate, reap, crash recovery through the journal record).
//
// The controllers are enabled in each parent's cgroup.subtree_control where
// the kernel lets forkd (its own parent and that parent's ancestors below
// the mount). A controller the host lacks is an error naming it, unless the
// operator allowed it (--allow-missing-cgroup-controllers): then that limit
// is not set, and forkd logs so at start and names it in every error it
// would have caused.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd::sandbox {

struct CgroupPolicy {
  bool enabled = true;  // false: --no-vmm-cgroup (VMMs stay in forkd's cgroup)
  std::string parent;   // empty: <cgroup2 mount>/forkd.slice
  bool allow_missing_controllers = false;
  uint64_t memory_overhead_bytes = 64ull << 20;  // memory.max = guest RAM + this
  uint64_t pids_max = 64;                        // pids.max (the VMM's threads)
  uint32_t cpu_weight = 100;                     // cpu.weight (1..10000)
};

struct VmLimits {
  uint64_t memory_max = 0;  // bytes
  uint64_t pids_max = 0;
  uint32_t cpu_weight = 0;
};

// The controllers forkd writes limits for.
inline constexpr const char* kVmControllers[] = {"memory", "pids", "cpu"};

class CgroupPlacer {
 public:
  // Resolves the parent (creating it when missing), enables the controllers
  // in it and its ancestors, and checks what is available. `warning` gets a
  // line for the log when controllers are missing and allowed.
  static absl::StatusOr<CgroupPlacer> Init(const CgroupPolicy& policy, std::string* warning);

  const CgroupPolicy& policy() const { return policy_; }
  const std::string& parent() const { return parent_; }
  const std::string& mount() const { return mount_; }
  const std::set<std::string>& missing() const { return missing_; }

  // The VM's cgroup: <given_parent or forkd's parent>/forkd-vm-<key>. Pure
  // (the journal names it before it exists).
  std::string PathFor(const std::string& key, const std::string& given_parent) const;

  // Creates `dir` (from PathFor) with `limits`. A given parent (a Fork's
  // cgroup_path) gets its controllers enabled too; one it cannot have is
  // the same error as for forkd's own parent.
  absl::Status Create(const std::string& dir, const std::string& given_parent,
                      const VmLimits& limits) const;

  // The limits for a VM of `guest_memory_mib`.
  VmLimits LimitsFor(uint32_t guest_memory_mib) const;

 private:
  CgroupPolicy policy_;
  std::string mount_, parent_;
  std::set<std::string> missing_;
};

// Removes a cgroup forkd made (a VM's). Its processes must be gone (the
// VMM reaped); a cgroup whose last task is still exiting is retried for a
// short while. A missing directory is OK.
absl::Status RemoveVmCgroup(const std::string& dir);
// Kills whatever still runs in a cgroup forkd made (one nothing owns any more:
// an unowned VM cgroup at recovery, a build's after its VMM was reaped), then
// removes it. A missing directory is OK.
absl::Status KillAndRemoveVmCgroup(const std::string& dir);

// Where cgroup v2 is mounted (from /proc/self/mountinfo).
absl::StatusOr<std::string> Cgroup2Mount();

// The controllers listed in `dir`/cgroup.controllers.
absl::StatusOr<std::set<std::string>> ControllersOf(const std::string& dir);

}  // namespace forkd::sandbox
