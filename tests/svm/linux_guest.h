// Shared by the Linux-guest tests of tests/svm: how they boot Debian's stock
// kernel with the agent, reach the agent, and read guest files.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/client.h"
#include "tests/vmm/vmm_process.h"

namespace forkd::vmm::testing {

inline constexpr auto kLinuxCallDeadline = std::chrono::seconds(10);
// Hang guard only, for a cold boot to the agent: under the emulated-SVM tier a
// stock kernel with its modules needs minutes of host time to reach it.
inline constexpr auto kLinuxBootGuard = std::chrono::seconds(600);

// FORKD_LINUX_INITRD (the agent initramfs with the kernel's modules, set by the
// emulated-SVM tier) or the plain agent initramfs.
std::string LinuxInitrd();

// The guest command line, with FORKD_LINUX_CMDLINE_EXTRA appended.
std::string LinuxCmdline();

// Spawns forkd-vmm booting FORKD_LINUX_KERNEL with LinuxInitrd(), virtio-rng
// and vsock on `uds`, plus `extra` arguments; waits for READY.
absl::StatusOr<std::unique_ptr<VmmProcess>> BootLinux(const std::string& uds,
                                                      const std::vector<std::string>& extra = {});
// The same with the given kernel and initramfs.
absl::StatusOr<std::unique_ptr<VmmProcess>> BootLinuxImage(
    const std::string& kernel, const std::string& initrd, const std::string& uds,
    const std::vector<std::string>& extra = {});

// Connects to the agent and Pings it, retrying until `guard` runs out: until
// the agent listens. (After a restore forkd-vmm holds the connect until the
// guest has handled the vsock transport reset, so a restored fork needs no
// retry: linux_fork_io_test's ConnectRightAfterReadyIsServed.)
absl::StatusOr<agent::AgentClient> ConnectAgent(const std::string& uds, std::chrono::seconds guard);

absl::StatusOr<std::string> ReadGuestFile(agent::AgentClient& client, const std::string& path,
                                          uint64_t max_bytes);

// Runs argv in the guest; its stdout when it exits 0, an error otherwise.
// `n` bytes of the guest's /dev/urandom (the same CRNG output as getrandom(2)
// since Linux 5.18), read by the agent without running a process (an exec
// draws from the CRNG itself).
absl::StatusOr<std::string> ReadGuestRandom(agent::AgentClient& client, uint64_t n);

// The guest's CLOCK_BOOTTIME in ms, from /proc/uptime.
absl::StatusOr<int64_t> GuestUptimeMs(agent::AgentClient& client);

// Polls GuestUptimeMs until it reaches `min_ms`; an error at `give_up`.
absl::Status WaitForGuestUptime(agent::AgentClient& client, int64_t min_ms,
                                std::chrono::steady_clock::time_point give_up);

absl::StatusOr<std::string> ExecInGuest(agent::AgentClient& client,
                                        const std::vector<std::string>& argv);

}  // namespace forkd::vmm::testing
