// GuestPin: what a VM booted, as stamped into every snapshot and checked on every restore.
//
//   kernel_sha256   SHA-256 of the kernel image bytes loaded into the guest
//   initrd_sha256   SHA-256 of the initramfs bytes loaded (EmptySha256() when there is none)
//   agent_protocol  the guest agent protocol version (agent/protocol.h kProtocolVersion)
//   unpinned        the VM was booted with --insecure-skip-guest-verify: the digests describe
//                   what was loaded but nobody vouched for it. A pinned daemon refuses such a
//                   snapshot (CheckPin).
//
// The chain from an operator's digest to a running fork is in docs/guest-pin.md.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernel-stage/digest.h"

namespace forkd::kernel_stage {

struct GuestPin {
  Sha256Digest kernel_sha256{};
  Sha256Digest initrd_sha256{};
  uint32_t agent_protocol = 0;
  bool unpinned = false;
  friend bool operator==(const GuestPin&, const GuestPin&) = default;
};

// "kernel <hex> initrd <hex> agent-protocol N[ (unpinned)]", for logs and errors.
std::string DescribePin(const GuestPin& pin);

// Whether a snapshot stamped with `stamped` may be restored by a daemon pinned to `expected`
// (whose `unpinned` must be false). FAILED_PRECONDITION, naming both values, when:
//   - the snapshot is unpinned ("snapshot is unpinned (...); this daemon is pinned to ...");
//   - the kernel digests differ ("snapshot kernel SHA-256 <hex> is not the pinned <hex>");
//   - the initramfs digests differ (same form);
//   - the agent protocol versions differ.
// Every differing item is named in the one message.
absl::Status CheckPin(const GuestPin& expected, const GuestPin& stamped);

}  // namespace forkd::kernel_stage
