// A restored fork of a Linux template, owned through its gate resources the
// way forkd owns one (gate::Reap ends it): shared by the tests of tests/svm
// that restore sibling forks of one snapshot.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/gate/fork_resources.h"
#include "tests/vmm/owned_fork.h"

namespace forkd::vmm::testing {

struct LinuxFork {
  gate::ForkResources resources;
  OwnedFork vmm;
  std::string uds;  // its vsock multiplexer
};

// Restores `snap` as fork `id`, in its own directory `dir`/`id` (which holds
// its vsock socket), with `extra` arguments, and waits for READY. `binary`
// empty is forkd-vmm; else another build of it (forkd-vmm-test-hook).
absl::StatusOr<LinuxFork> RestoreLinuxFork(const std::filesystem::path& dir, const std::string& id,
                                           const std::filesystem::path& snap,
                                           const std::vector<std::string>& extra = {},
                                           const std::string& binary = {});

}  // namespace forkd::vmm::testing
