// Attaching virtio-net to a tap: opens /dev/net/tun and attaches to the tap
// `name` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) inside the network namespace
// at `netns_path`, non-blocking, with a 12-byte vnet header per frame.
//
// The tap is normally precreated (persistent, owned by the VMM's uid) by
// forkd in the fork's namespace; the VMM only attaches by name. The
// namespace is entered on a short-lived thread of its own, so no other
// thread of the VMM ever changes network namespace.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::vmm::virtio {

// `netns_path` empty: the VMM's own namespace. Errors name the tap and the
// namespace (NotFound, PermissionDenied, ...).
absl::StatusOr<UniqueFd> OpenTap(const std::string& name, const std::string& netns_path);

}  // namespace forkd::vmm::virtio
