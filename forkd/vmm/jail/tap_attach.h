// Attaching a jailed VMM's tap: done before the jail drops privileges,
// inside the fork's network namespace, and stricter than
// virtio::OpenTap (which --no-jail keeps using):
//
//   - the tap's owner is read over rtnetlink (IFLA_TUN_OWNER/GROUP) and
//     must be the jail's uid (or, with no owner, its gid): a tap anyone
//     may open, or someone else's, is refused;
//   - TUNSETIFF runs on a thread that has already given up root and every
//     capability for the jail's uid/gid, so the kernel itself enforces the
//     ownership and can never create a tap (no CAP_NET_ADMIN): a tap that
//     vanished after the check is an error, never a fresh unrouted tap;
//   - the attached tap must be persistent (IFF_PERSIST, made by forkd).
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkd::vmm::jail {

struct TapOwner {
  bool has_owner = false;
  uid_t owner = 0;
  bool has_group = false;
  gid_t group = 0;
  bool persistent = false;
};

// Reads a tap's owner, group and persistence over rtnetlink in the calling
// thread's network namespace. NotFound when there is no such link; an
// error when it is not a tun/tap device.
absl::StatusOr<TapOwner> QueryTapOwner(const std::string& name);

// The last step of AttachTapAs, in the calling thread's namespace: opens
// /dev/net/tun, then gives up the calling thread's root and capabilities
// for good (uid/gid, no supplementary groups) before TUNSETIFF, and checks
// IFF_PERSIST. Call it only on a thread that ends right after (tests do).
absl::StatusOr<UniqueFd> AttachHereAs(const std::string& name, uid_t uid, gid_t gid,
                                      const std::string& ctx);

// `netns_path` empty: the caller's namespace.
absl::StatusOr<UniqueFd> AttachTapAs(const std::string& name, const std::string& netns_path,
                                     uid_t uid, gid_t gid);

}  // namespace forkd::vmm::jail
