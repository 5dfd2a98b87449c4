// Loads the kernel modules the initramfs carries for a stock kernel that builds
// its guest-device drivers as modules (Debian's cloud kernel: virtio_mmio,
// virtio_rng, virtio_net, vsock; docs/guest-kernel.md). The build
// (agent/initramfs/add-kernel-modules) writes the list, one absolute .ko path
// per line in load order (dependencies first). The agent loads them before it
// listens on vsock, since without them there is no vsock device to listen on.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd::agent {

// Where the initramfs build puts the list.
inline constexpr char kModuleListPath[] = "/lib/modules/forkd.load";

// The list's entries: blank lines and lines starting with '#' are skipped;
// every other line must be an absolute path.
absl::StatusOr<std::vector<std::string>> ParseModuleList(std::string_view text);

// Loads one module file; injectable so tests never load into the host kernel.
// The default calls finit_module(2) and treats EEXIST (already loaded) as done.
using ModuleLoader = std::function<absl::Status(const std::string& path)>;
ModuleLoader FinitModuleLoader();

// Loads every module of the list at `list_path` in order. A missing list is
// not an error (a kernel with the drivers built in needs none) and loads
// nothing. Each failure is returned and the rest still attempted, so the
// console shows every missing piece at once; the number loaded is in `loaded`.
std::vector<absl::Status> LoadModules(const std::string& list_path, const ModuleLoader& load,
                                      int* loaded = nullptr);

}  // namespace forkd::agent
