// What the agent does when the kernel runs it as /init (PID 1).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace forkd::agent {

// Mounts /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run and /tmp.
// Each failure is returned and the rest still attempted: a guest missing
// /dev/pts is still worth serving, and the host learns why from the log.
std::vector<absl::Status> MountEarlyFilesystems();

// Runs `serve` in a child process and stays behind as the reaper of orphaned
// processes (every orphan in the guest becomes PID 1's child). Restarts the
// child if it dies. Never returns: PID 1 exiting panics the kernel.
[[noreturn]] void RunAsInit(int (*serve)(void*), void* arg);

}  // namespace forkd::agent
