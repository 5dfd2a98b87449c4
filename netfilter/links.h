// Links, addresses and routes of one network namespace over rtnetlink
// (libnl-3), plus tap creation through /dev/net/tun. No `ip` processes.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "netfilter/ip.h"

struct nl_sock;
struct rtnl_link;

namespace forkd::netfilter {

using MacAddress = std::array<uint8_t, 6>;
absl::StatusOr<MacAddress> ParseMac(const std::string& text);

// An address assigned to an interface: host bits are allowed ("10.0.0.1/30").
struct InterfaceAddress {
  IpAddress address;
  int prefix = 0;
  static absl::StatusOr<InterfaceAddress> Parse(const std::string& text);
};

struct TapOptions {
  std::string name;
  std::optional<uid_t> owner;  // the VMM's uid, so an unprivileged VMM can open it
  std::optional<gid_t> group;
  // A persistent tap outlives the returned fd (and must be deleted); a
  // non-persistent one disappears when the last fd to it closes.
  bool persistent = false;
  bool vnet_hdr = false;  // IFF_VNET_HDR, for virtio-net offloads
};

// Creates a tap inside `netns_fd` (negative: the caller's namespace) and
// returns its queue fd. The tap belongs to the namespace it was created in.
absl::StatusOr<UniqueFd> CreateTap(int netns_fd, const TapOptions& options);

class RtNetlink {
 public:
  // A NETLINK_ROUTE socket bound to `netns_fd` (negative: the caller's own).
  static absl::StatusOr<RtNetlink> Open(int netns_fd);

  RtNetlink(RtNetlink&& o) noexcept;
  RtNetlink& operator=(RtNetlink&& o) noexcept;
  RtNetlink(const RtNetlink&) = delete;
  RtNetlink& operator=(const RtNetlink&) = delete;
  ~RtNetlink();

  // A veth pair; the peer end is created directly inside `peer_netns_fd`
  // when that is not negative.
  absl::Status CreateVethPair(const std::string& name, const std::string& peer,
                              int peer_netns_fd = -1);
  absl::Status DeleteLink(const std::string& name);
  absl::Status MoveToNetns(const std::string& name, int netns_fd);
  absl::Status SetUp(const std::string& name);
  absl::Status SetMac(const std::string& name, const MacAddress& mac);
  absl::Status AddAddress(const std::string& name, const InterfaceAddress& address);
  // A route to `destination` via `gateway` and/or out of `device`.
  absl::Status AddRoute(const Cidr& destination, const std::optional<IpAddress>& gateway,
                        const std::optional<std::string>& device);
  absl::StatusOr<int> IfIndex(const std::string& name);
  // True once the kernel reports the link operationally up (carrier and
  // queueing discipline active). Until then transmitted packets are dropped.
  absl::StatusOr<bool> IsOperUp(const std::string& name);
  bool LinkExists(const std::string& name);

 private:
  explicit RtNetlink(nl_sock* sock) : sock_(sock) {}
  absl::Status ChangeLink(const std::string& name, const std::string& what,
                          void (*apply)(::rtnl_link* change, const void* arg), const void* arg);
  nl_sock* sock_ = nullptr;
};

}  // namespace forkd::netfilter
