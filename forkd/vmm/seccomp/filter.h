// Compiling an allow-list into a seccomp BPF program (libseccomp) and
// installing it on the calling thread.
//
// Compiling costs ~100 us per list, installing a ready program one syscall:
// forkd-vmm compiles every kind once at start-up (thread_filters.h) so no
// thread pays libseccomp on the restore path (bench/vmm_bench measures it).
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/vmm/seccomp/allow_list.h"

namespace forkd::vmm::seccomp {

struct BpfProgram {
  std::vector<sock_filter> insns;
};

// Default action: kill the process (SECCOMP_RET_KILL_PROCESS).
absl::StatusOr<BpfProgram> Compile(const AllowList& list);

// Sets PR_SET_NO_NEW_PRIVS on the calling thread (seccomp requires it
// without CAP_SYS_ADMIN) and installs `program` on it. Filters stack: a
// thread created afterwards inherits it.
absl::Status InstallOnThisThread(const BpfProgram& program);

}  // namespace forkd::vmm::seccomp
