// The guest pin at daemon start (docs/guest-pin.md, step 2): the kernel and
// initramfs must have the SHA-256 the operator gave (--kernel-sha256,
// --initrd-sha256) unless --insecure-skip-guest-verify waives it, and the
// probe guest is pinned to its own digest. The result is what every template
// build re-verifies (forkd/templates/pinned_guests.h) and every restore
// expects (forkd/pipeline/restore_pin.h).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "forkd/daemon/flags.h"
#include "forkd/templates/pinned_guests.h"

namespace forkd::daemon {

// forkd's exit code when it refuses to start on the guest pin (a digest
// mismatch or a malformed digest), as forkd-vmm's for a pin refusal.
inline constexpr int kGuestPinRefusedExit = 4;

// FAILED_PRECONDITION naming the file and both digests on a mismatch;
// INVALID_ARGUMENT for a malformed digest; the errno status of an
// unreadable kernel or initramfs.
absl::StatusOr<std::unique_ptr<templates::PinnedGuests>> OpenGuestPin(const Flags& flags);

}  // namespace forkd::daemon
