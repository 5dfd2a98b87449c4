// Re-addresses the guest NIC after a restore: every fork of one snapshot wakes
// up with the snapshot's MAC and addresses, and forkd gives each its own.
#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/proto/agent.pb.h"

namespace forkd::agent {

struct Ipv4Prefix {
  in_addr addr{};
  uint8_t prefix_len = 0;
};
struct Ipv6Prefix {
  in6_addr addr{};
  uint8_t prefix_len = 0;
};

// A validated Network message. Parsing is separate from applying so that a bad
// request is refused before the NIC is touched at all.
struct NetworkConfig {
  std::optional<Ipv4Prefix> ipv4;
  std::optional<Ipv6Prefix> ipv6;
  std::optional<in_addr> ipv4_gateway;
  std::optional<in6_addr> ipv6_gateway;
  std::optional<std::array<uint8_t, 6>> mac;
};

absl::StatusOr<NetworkConfig> ParseNetwork(const v1::Network& net);

// Applies a NetworkConfig. Injectable: host tests must never touch the host's
// own interfaces, so they use a recording fake or the real one inside a
// network namespace they created.
class NetConfigurator {
 public:
  virtual ~NetConfigurator() = default;
  virtual absl::Status Apply(const NetworkConfig& config) = 0;
};

// The real thing, over rtnetlink, in the calling thread's network namespace:
// link down, set MAC, link up (the down/up also flushes the neighbour cache,
// which still holds the snapshot's gateway MAC), delete global addresses, add
// the new ones (IPv6 without DAD, so it is usable at once), replace the
// default routes.
std::unique_ptr<NetConfigurator> MakeRtnetlinkConfigurator(std::string ifname);

// Brings an interface up (used for lo at boot).
absl::Status SetLinkUp(const std::string& ifname);

}  // namespace forkd::agent
