// The guest pin on restore (docs/guest-pin.md, steps 6 and 7): before forkd restores a template's
// snapshot it reads the stamp in the snapshot's state header with the snapshot library and
// compares it with what this daemon is pinned to, then passes the same expectation to forkd-vmm
// (--expect-*), which checks it again on the bytes it restores. A forkd-vmm that refuses exits 4;
// ExplainRestoreFailure turns that into the same typed error.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/templates/pinned_guests.h"
#include "forkd/templates/template_meta.h"
#include "kernel-stage/guest_pin.h"

namespace forkd::pipeline {

// forkd-vmm's exit code for a guest pin refusal (forkd/vmm/main.cc).
inline constexpr int kVmmPinRefusedExit = 4;

// The guest pin stamped into the snapshot at `snapshot_dir`, read as forkd-vmm's restore reads it
// (manifest and state hash verified, memory file size, CPU compatibility).
absl::StatusOr<kernel_stage::GuestPin> ReadSnapshotPin(const std::filesystem::path& snapshot_dir);

// Whether this daemon may restore template `meta`, and if so the forkd-vmm arguments that make
// the VMM check it again:
//   --expect-kernel-sha256 K --expect-initrd-sha256 I --expect-agent-protocol N
// where K, I, N are what `guests` pins a template of meta.guest to. FAILED_PRECONDITION (marked
// kernel_stage::IsPinMismatch), prefixed "template <id>: ", when the stamp differs (naming both
// values of each differing item) or the snapshot is unpinned. Under the daemon's
// --insecure-skip-guest-verify an unpinned snapshot is restored without expectations and a
// warning is logged (unless `warn_waiver` is false: checks that precede the restore itself); a
// pinned one is still checked.
absl::StatusOr<std::vector<std::string>> RestorePinArgs(const templates::PinnedGuests& guests,
                                                        const templates::TemplateMeta& meta,
                                                        bool warn_waiver = true);

// For a restore whose VMM did not answer READY/STANDBY (`failed`): waits (bounded) for the VMM
// behind `vmm_pidfd` to exit and reads its status from its keeper (`keeper_pidfd`,
// sandbox/vmm_exit.h) without reaping it, and when it exited kVmmPinRefusedExit returns
// FAILED_PRECONDITION marked as a pin mismatch quoting `failed` (forkd-vmm's EXIT line names
// both digests). Any other outcome returns `failed` unchanged.
absl::Status ExplainRestoreFailure(const absl::Status& failed, int vmm_pidfd, int keeper_pidfd);

}  // namespace forkd::pipeline
