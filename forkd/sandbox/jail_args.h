// How forkd jails each forkd-vmm it spawns (forkd/vmm/jail does the
// jailing; this is forkd's side of it):
//
//   - a uid/gid per VM from a configured range (--vmm-uid-range), or one
//     shared uid/gid for every VM (--vmm-uid-shared); the number is the same
//     for uid and gid, never 0, and recorded in the VM's journal record so a
//     restarted forkd does not hand it out twice;
//   - the files the VMM needs, and nothing else, made usable by that uid:
//     its socket directory (the vsock socket and the guest's PATH_P sockets)
//     and its SNAPSHOT directory, both 0700 and owned by the uid; the
//     template's snapshot is read-only to it (0644 files inside the data
//     dir, which is 0700 root: no host user but root can reach them, the
//     VMM only through its jail's bind mount);
//   - an empty per-VM directory the VMM mounts its tmpfs root on;
//   - its tap owned by the uid/gid (the jailed VMM attaches only a tap its
//     uid owns: forkd/vmm/jail/tap_attach.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd::sandbox {

struct JailPolicy {
  bool enabled = true;  // false: --no-jail (debugging only; forkd logs it loudly)
  uint32_t uid_first = 100000;
  uint32_t uid_count = 65536;  // [uid_first, uid_first + uid_count)
  bool shared = false;         // every VM runs as uid_first
};

// "100000-165535" -> first 100000, count 65536. Refuses 0 and reversed ranges.
absl::StatusOr<JailPolicy> ParseUidRange(const std::string& text);

// Hands out the per-VM uids of a policy. Thread-safe.
class UidPool {
 public:
  explicit UidPool(JailPolicy policy) : policy_(policy) {}
  // A free uid (the shared one when shared); RESOURCE_EXHAUSTED when the
  // range is used up.
  absl::StatusOr<uint32_t> Acquire();
  // Marks `uid` as in use (recovery: an adopted VM keeps its uid).
  void MarkUsed(uint32_t uid);
  void Release(uint32_t uid);
  bool Contains(uint32_t uid) const;
  const JailPolicy& policy() const { return policy_; }

 private:
  JailPolicy policy_;
  std::mutex mu_;
  std::set<uint32_t> used_;
  uint32_t next_ = 0;
};

// One VM's jail, as forkd prepares it.
struct VmmJail {
  uint32_t uid = 0;                    // also the gid
  std::filesystem::path root;          // empty directory, root-owned 0700
  std::filesystem::path socket_dir;    // uid-owned 0700: the vsock socket lives here
  std::filesystem::path snapshot_dir;  // uid-owned 0700: SNAPSHOT targets (ForkRunning)
};

// The layout of a VM's files under `vm_dir` (DATA/sandboxes/KEY, or a
// template build's work directory). Pure.
VmmJail JailLayout(const std::filesystem::path& vm_dir, uint32_t uid);

// Creates the three directories with their owners and modes. With the jail
// disabled the directories are made root-owned (uid 0 in `jail`).
absl::Status PrepareJailDirs(const VmmJail& jail);

// forkd-vmm's jail flags for `jail` (--jail-root/-uid/-gid, --jail-rw of the
// snapshot directory, --keep-fd of forkd's control duplicate: vmm_child.h
// kControlKeeperFd), or {"--no-jail"} when the policy disables it.
std::vector<std::string> JailArgs(const JailPolicy& policy, const VmmJail& jail);

// A template build's jail: `work` (the build's socket directory, where its
// SNAPSHOT goes) becomes the uid's (0700) and work/jail its empty root.
// Returns the forkd-vmm flags ({"--no-jail"} when the policy disables it).
absl::StatusOr<std::vector<std::string>> PrepareBuildJail(const JailPolicy& policy,
                                                          std::optional<uint32_t> uid,
                                                          const std::filesystem::path& work);

// Makes a snapshot directory written by a jailed VMM (owned by its uid)
// root's and read-only to everyone who can reach it (0755 directory, 0644
// files), so VMMs of other uids can restore it and its writer can no longer
// change it.
absl::Status SealSnapshotDir(const std::filesystem::path& dir);

}  // namespace forkd::sandbox
