// Everything one fork owns on the host, and the one function that removes all
// of it. A fork that fails the reseed gate (or any later step) is reaped here:
// its VMM process is killed and waited for, its tap and nftables chains are
// removed from the namespace they live in, and its files are deleted.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::gate {

struct ForkResources {
  std::string fork_id;
  // The fork's VMM process, as a pidfd so a recycled pid can never be killed
  // by mistake. Invalid: no process (already gone or never started).
  UniqueFd vmm_pidfd;
  // The VMM's parent, its keeper (forkd/sandbox/keeper), when forkd knows
  // it: reaped (forkd's child) or waited for after the VMM, and killed when
  // it does not exit by itself.
  UniqueFd keeper_pidfd;
  // The fork's tap, in the network namespace `netns` (its nftables objects are
  // found through the same namespace). Empty tap: no network.
  UniqueFd netns;
  std::string tap;
  uint32_t nft_shards = 1;
  // Files and directories owned by the fork: memory overlay, sockets, its
  // journal entry. Removed recursively.
  std::vector<std::filesystem::path> paths;
};

// Opens a pidfd for `pid` (which must be alive).
absl::StatusOr<UniqueFd> OpenPidfd(pid_t pid);

// Kills and waits for the VMM (and then its keeper), then removes the tap's nftables objects, the
// tap itself and every path. Every step runs even when an earlier one fails;
// what was already gone is not an error. Returns the first failure, naming
// the fork and the step; on success nothing of the fork is left.
absl::Status Reap(ForkResources& fork);

}  // namespace forkd::gate
