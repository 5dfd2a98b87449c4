// What forkd-vmm's jail is made of (jail.h). Plain data, filled from the
// command line by forkd-vmm and by tests.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace forkd::vmm::jail {

struct Rlimits {
  uint64_t nofile = 4096;  // vsock allows 1024 connections, each a host socket
  // Largest file the VMM may write: a SNAPSHOT's memory file is the guest's
  // RAM (at most 3 GiB) plus the state.
  uint64_t fsize = 4ULL << 30;
  // Processes and threads of the jail uid (the kernel counts per uid): the
  // VMM has at most 4 vCPUs + 6 other threads; raise it when VMs share a uid.
  uint64_t nproc = 64;
  // RLIMIT_CORE is always 0: a core file would hold guest memory.
};

struct JailConfig {
  // An empty directory the caller made for this VM (and removes afterwards).
  // A tmpfs is mounted on it inside the VMM's own mount namespace and
  // becomes its root; nothing is ever written to the directory itself.
  std::string root;
  uid_t uid = 0;  // must not be 0
  gid_t gid = 0;  // must not be 0
  // Host paths made visible at the same path inside the jail, so the
  // command line's paths keep working: read-only (the snapshot directory,
  // a kernel) and read-write (the VM's socket directory, a SNAPSHOT target).
  std::vector<std::string> read_only;
  std::vector<std::string> read_write;
  // Device nodes, bound at the same path (the only entries under /dev).
  std::vector<std::string> devices;
  // cgroup v2 directory to join (the caller made it and set its limits;
  // cgroup.h); empty: stay where the caller put us.
  std::string cgroup;
  // Every other fd is closed (0 and 1 become /dev/null unless listed; 2
  // stays: it is where the VMM's errors go).
  std::vector<int> keep_fds;
  Rlimits limits;
  // The parent the VMM must not outlive (PR_SET_PDEATHSIG): when it is no
  // longer our parent by the time the signal is armed, the jail refuses.
  // The kernel sends the signal when the parent *thread* that forked us
  // ends: forkd's VMMs are forked by their single-threaded keeper
  // (forkd/sandbox/keeper), so they live as long as it does.
  pid_t expected_parent = 0;
};

}  // namespace forkd::vmm::jail
