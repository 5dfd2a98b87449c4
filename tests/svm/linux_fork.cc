#include "tests/svm/linux_fork.h"

#include <system_error>
#include <utility>

#include "common/errno_status.h"

namespace forkd::vmm::testing {

absl::StatusOr<LinuxFork> RestoreLinuxFork(const std::filesystem::path& dir, const std::string& id,
                                           const std::filesystem::path& snap,
                                           const std::vector<std::string>& extra,
                                           const std::string& binary) {
  LinuxFork f;
  const std::filesystem::path fork_dir = dir / id;
  std::error_code ec;
  std::filesystem::create_directories(fork_dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "create " + fork_dir.string());
  f.uds = (fork_dir / "vsock.sock").string();
  f.resources.fork_id = id;
  f.resources.paths = {fork_dir};
  std::vector<std::string> args = {"--restore", snap.string(), "--vsock-uds", f.uds};
  args.insert(args.end(), extra.begin(), extra.end());
  absl::StatusOr<OwnedFork> vmm = binary.empty() ? SpawnOwnedFork(args, f.resources)
                                                 : SpawnOwnedForkBinary(binary, args, f.resources);
  if (!vmm.ok()) return vmm.status();
  f.vmm = std::move(*vmm);
  return f;
}

}  // namespace forkd::vmm::testing
