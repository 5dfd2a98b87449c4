// Benchmarks' shared setup: a snapshot of the probe guest taken by a
// forkd-vmm process once the guest is in a known state.
#pragma once

#include <filesystem>
#include <string>

namespace forkd::vmm::bench {

// Prints `what` to stderr with the benchmark's name and exits 1.
[[noreturn]] void Die(const std::string& what);

// Boots the probe guest with `cmdline` (vsock CID 3, 64 MiB) in a forkd-vmm
// process, waits for the serial line containing `ready_line`, snapshots it
// into `dir`/snap and stops it. Returns the snapshot directory.
std::filesystem::path MakeProbeSnapshot(const std::filesystem::path& dir,
                                        const std::string& cmdline, const std::string& ready_line);

}  // namespace forkd::vmm::bench
