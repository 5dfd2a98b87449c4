// Identity of a process that survives pid reuse: its executable and its
// start time (in clock ticks since boot, /proc/PID/stat field 22). A journal
// record names a VMM by pid + identity; on restart a pid whose identity
// differs belongs to another process and is never signalled.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace forkd::sandbox {

struct ProcessIdentity {
  std::string exe;  // readlink(/proc/PID/exe)
  uint64_t start_ticks = 0;
  friend bool operator==(const ProcessIdentity&, const ProcessIdentity&) = default;
};

// NOT_FOUND when the process is gone.
absl::StatusOr<ProcessIdentity> IdentityOf(pid_t pid);

// The process's parent pid (/proc/PID/stat field 4); NOT_FOUND when gone.
absl::StatusOr<pid_t> ParentOf(pid_t pid);

// The process's NUL-separated command line as a vector.
absl::StatusOr<std::vector<std::string>> CommandLineOf(pid_t pid);

// Proportional and resident set size (bytes) from /proc/PID/smaps_rollup.
struct MemoryUse {
  uint64_t pss = 0;
  uint64_t rss = 0;
};
absl::StatusOr<MemoryUse> MemoryOf(pid_t pid);

}  // namespace forkd::sandbox
