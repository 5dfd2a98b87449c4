// A fork's forkd-vmm process as forkd holds it: spawned, READY, and then
// owned by the fork's gate::ForkResources through a pidfd, so only
// gate::Reap ends it (a recycled pid can never be signalled by mistake).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/gate/fork_resources.h"
#include "tests/vmm/vmm_process.h"

namespace forkd::vmm::testing {

struct OwnedFork {
  std::unique_ptr<VmmProcess> vmm;  // serial and control only: its pid is released
  pid_t pid = -1;                   // for waitpid(WNOHANG) checks only
};

// Spawns forkd-vmm with `args` (a fork's --restore ...), waits for READY and
// puts the process's pidfd into `resources`.
absl::StatusOr<OwnedFork> SpawnOwnedFork(const std::vector<std::string>& args,
                                         gate::ForkResources& resources);
// The same with another build of the VMM (e.g. forkd-vmm-test-hook).
absl::StatusOr<OwnedFork> SpawnOwnedForkBinary(const std::string& binary,
                                               const std::vector<std::string>& args,
                                               gate::ForkResources& resources);

}  // namespace forkd::vmm::testing
