// How a VMM ended, told by its keeper (forkd/sandbox/keeper): the VMM is
// the keeper's child, never forkd's, and the keeper exits with the VMM's
// status N, or 128+S when a signal S killed it. A keeper killed by a signal
// itself took its VMM along (the jail's PR_SET_PDEATHSIG). After a forkd
// restart the keeper is no longer forkd's child and the status is unknown.
// forkd-vmm's own exit statuses are below 128 (forkd/vmm/README.md).
#pragma once

#include <chrono>
#include <string>

namespace forkd::sandbox {

struct VmmExit {
  enum class Kind { kUnknown, kExited, kKilled, kKeeperKilled };
  Kind kind = Kind::kUnknown;
  int value = 0;  // the exit status (kExited) or the signal

  // "vmm exited with status N", "vmm killed by signal N", "vmm keeper
  // killed by signal N (the vmm died with it)", "vmm exited (status
  // unknown: adopted after a forkd restart)".
  std::string Describe() const;
};

// Decodes a keeper's wait status (siginfo's si_code and si_status).
VmmExit DecodeKeeperStatus(int code, int status);

// Waits up to `wait` for the keeper behind `keeper_pidfd` (forkd's child;
// -1: none, e.g. adopted) to exit, then reads its status without reaping it
// (gate::Reap does). kUnknown when there is no keeper, it is not forkd's
// child or it is still running.
VmmExit KeeperReport(int keeper_pidfd, std::chrono::milliseconds wait);

}  // namespace forkd::sandbox
