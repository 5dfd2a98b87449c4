#include "tests/vmm/owned_fork.h"

#include "common/errno_status.h"

namespace forkd::vmm::testing {

absl::StatusOr<OwnedFork> SpawnOwnedFork(const std::vector<std::string>& args,
                                         gate::ForkResources& resources) {
  return SpawnOwnedForkBinary(ForkdVmmPath(), args, resources);
}

absl::StatusOr<OwnedFork> SpawnOwnedForkBinary(const std::string& binary,
                                               const std::vector<std::string>& args,
                                               gate::ForkResources& resources) {
  OwnedFork f;
  FORKD_ASSIGN_OR_RETURN(f.vmm, VmmProcess::SpawnBinary(binary, args));
  if (auto ready = f.vmm->ReadLine(); ready != "READY") {
    return absl::InternalError("fork VMM answered '" + ready.value_or("<none>") +
                               "' instead of READY; serial:\n" + f.vmm->serial().text());
  }
  FORKD_ASSIGN_OR_RETURN(resources.vmm_pidfd, gate::OpenPidfd(f.vmm->pid()));
  f.pid = f.vmm->Release();
  return f;
}

}  // namespace forkd::vmm::testing
