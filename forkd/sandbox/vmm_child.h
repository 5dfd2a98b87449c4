// A forkd-vmm process as the daemon runs it: spawned with a control socket
// (line protocol: STANDBY/READY/OK/EXIT out, GO/STOP/SNAPSHOT in), serial
// output to a file or /dev/null, optionally moved into a cgroup v2 before
// exec, and owned through a pidfd.
//
// Its parent is not forkd but a per-VM keeper (forkd/sandbox/keeper,
// `forkd-vmm-keeper`): forkd forks and execs the keeper, which forks and
// execs forkd-vmm and only waits for it. The jail's PR_SET_PDEATHSIG then
// follows the keeper, so a crash of forkd leaves the VMM running for the
// next start to adopt, while a dead keeper takes its VMM along. The keeper
// hands forkd a pidfd of the VMM (no pid race), and its exit status is the
// VMM's (vmm_exit.h).
//
// Surviving a forkd restart: forkd-vmm stops its VM when its control socket
// reaches EOF, so that a VMM never outlives its supervisor by accident. A
// daemon that is killed must still be able to re-adopt its live VMMs, so the
// child also inherits a duplicate of forkd's end of the control socket at
// kControlKeeperFd (which the jail must keep: JailArgs passes --keep-fd):
// the socket never reaches EOF while the VMM lives, and a
// restarted forkd takes its end back with pidfd_getfd(pidfd, kControlKeeperFd)
// (Adopt). What protects against a VMM outliving forkd is then the journal:
// a restarted forkd adopts every VMM it has a "ready" record for and kills
// everything else it finds (Node::Recover, forkd/pipeline/node.cc).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::sandbox {

inline constexpr int kChildControlFd = 3;
inline constexpr int kControlKeeperFd = 4;

struct VmmSpawnOptions {
  std::string keeper;  // the forkd-vmm-keeper binary (required)
  std::string binary;
  std::vector<std::string> args;  // after the binary; --control-fd/--serial-out are added
  std::string serial_out = "/dev/null";
  std::string cgroup_dir;    // non-empty: the child joins it (cgroup.procs) before exec
  bool keep_control = true;  // inherit kControlKeeperFd (see above)
};

class VmmChild {
 public:
  static absl::StatusOr<VmmChild> Spawn(const VmmSpawnOptions& options);
  // Re-attaches to a live VMM after a restart: its control socket end is
  // taken back from the process itself (needs CAP_SYS_PTRACE over it).
  static absl::StatusOr<VmmChild> Adopt(pid_t pid, int pidfd);

  VmmChild(VmmChild&&) = default;
  VmmChild& operator=(VmmChild&&) = default;

  pid_t pid() const { return pid_; }
  // The keeper (forkd's child until forkd restarts; -1 when adopted).
  pid_t keeper_pid() const { return keeper_pid_; }
  int control() const { return control_.get(); }
  // The pidfds of the VMM and of its keeper (a spawned child only), for
  // whoever reaps it (gate::ForkResources); invalid once taken.
  UniqueFd TakePidfd() { return std::move(pidfd_); }
  UniqueFd TakeKeeperPidfd() { return std::move(keeper_pidfd_); }
  // SIGKILLs the VMM and reaps its keeper, with the pidfds not taken.
  absl::Status KillAndReap();

  absl::Status Send(const std::string& line) const;
  // The next control line; DEADLINE_EXCEEDED or UNAVAILABLE (EOF: the VMM
  // exited) otherwise.
  absl::StatusOr<std::string> ReadLine(std::chrono::milliseconds timeout);
  // Waits for `want` as the next line; any other line is an error quoting it
  // (and the last lines of `serial_log`, when given).
  absl::Status Expect(const std::string& want, std::chrono::milliseconds timeout,
                      const std::string& serial_log = "");

 private:
  VmmChild(pid_t pid, UniqueFd control) : pid_(pid), control_(std::move(control)) {}
  pid_t pid_ = -1;
  pid_t keeper_pid_ = -1;
  UniqueFd control_, pidfd_, keeper_pidfd_;
  std::string buf_;
};

// Held shared around code that briefly holds an fd a VMM child must never
// inherit even until its exec (a tap's /dev/net/tun fd while forkd creates
// it: a copy in a keeper not yet exec'd keeps the tap attached, and the
// VMM that should attach it gets EBUSY); VmmChild::Spawn forks under it
// exclusively.
std::shared_mutex& ForkLock();

// The tail of a text file (serial logs in error messages).
std::string FileTail(const std::string& path, size_t max_bytes = 600);

}  // namespace forkd::sandbox
