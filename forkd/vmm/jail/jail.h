// forkd-vmm's jail, entered by the VMM process itself before it opens a
// snapshot or builds a VM (docs/threat-model.md, "The jail"):
//
//   - own mount namespace; a tmpfs root holding only the bound paths and
//     device nodes (no /proc, /sys, /dev/* other than the listed nodes);
//     pivot_root into it, the old root detached;
//   - the cgroup given by the caller joined;
//   - every fd closed but the listed ones; the environment cleared (also
//     the bytes /proc/<pid>/environ shows);
//   - rlimits: NOFILE, FSIZE, NPROC, CORE=0;
//   - capability bounding set and ambient set emptied, then the uid/gid
//     dropped to the unprivileged ones (supplementary groups gone), no
//     capability left in any set, PR_SET_NO_NEW_PRIVS, not dumpable (no
//     ptrace from other VMMs sharing the uid);
//   - PR_SET_PDEATHSIG(SIGKILL), armed after the uid change (which would
//     clear it).
//
// Must be called while the process has one thread. Needs root (real
// CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID, CAP_SETPCAP).
#pragma once

#include "absl/status/status.h"
#include "forkd/vmm/jail/jail_config.h"

namespace forkd::vmm::jail {

absl::Status EnterJail(const JailConfig& config);

}  // namespace forkd::vmm::jail
