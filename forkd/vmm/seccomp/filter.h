// Compiling an allow-list into a seccomp BPF program (libseccomp) and
// installing it on the calling thread.
//
// Compiling costs ~1 ms of CPU per list on the development hosts, installing
// a ready program one syscall: forkd-vmm's programs are compiled at build
// time (precompiled.h), so no forkd-vmm pays libseccomp on its restore path.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <span>
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
absl::Status InstallOnThisThread(std::span<const sock_filter> program);

}  // namespace forkd::vmm::seccomp
