// The egress policy of one sandbox tap: pure data plus validation. What rules a
// policy turns into is ruleset.h; how they reach the kernel is nftables.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "netfilter/ip.h"

namespace forkd::netfilter {

enum class Protocol : uint8_t { kAny, kTcp, kUdp };

struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;  // inclusive; equal to `first` for a single port
  friend bool operator==(const PortRange&, const PortRange&) = default;
};

// Allows guest traffic to `destination`.
//
// An allow rule that names NO ports allows every port and every protocol of its
// destination: the destination itself is the gate. A rule that names ports
// allows only those ports, for `protocol` (kAny = TCP and UDP; other protocols
// such as ICMP are then not allowed).
struct AllowRule {
  Cidr destination;
  Protocol protocol = Protocol::kAny;
  std::vector<PortRange> ports;
  friend bool operator==(const AllowRule&, const AllowRule&) = default;
};

enum class EgressMode : uint8_t {
  kDenyByDefault,  // only allow rules, the resolver and pinned destinations pass
  kAllowAll,       // everything public passes; metadata and private ranges still blocked
};

struct PinSetLimits {
  // Upper bound on pinned (address, port) elements per family; the kernel
  // refuses more (ENFILE), so a guest resolving endlessly cannot grow the set.
  uint32_t max_elements = 4096;
};

struct TapPolicy {
  std::string tap;  // interface name of the VM's tap inside the pod netns
  IpAddress guest_v4;
  std::optional<IpAddress> guest_v6;
  // The pod-local DNS resolver(s) the guest may query on port 53 (at most one
  // per family). Empty: the guest has no DNS.
  std::vector<IpAddress> resolvers;
  EgressMode mode = EgressMode::kDenyByDefault;
  std::vector<AllowRule> allow;
  // Parts of the private ranges (PrivateRanges()) that are NOT blocked. An
  // exception only lifts the private-range block: in deny-by-default mode the
  // destination still needs an allow rule (or a pin).
  std::vector<Cidr> private_exceptions;
  PinSetLimits pins;
};

// Size caps, so every netlink message a policy turns into stays bounded
// (nft_batch.h, Batch::kMaxMessage); Validate refuses more with the field named.
inline constexpr size_t kMaxAllowRules = 1024;
inline constexpr size_t kMaxPortRangesPerRule = 256;
inline constexpr size_t kMaxPrivateExceptions = 32;

// Longest name nftables object names derived from the tap may carry. IFNAMSIZ-1.
inline constexpr size_t kMaxTapNameLength = 15;

// Interface and sandbox ids: [A-Za-z0-9][A-Za-z0-9_-]{0,max-1}.
absl::Status ValidateName(std::string_view what, std::string_view name, size_t max_length);

// Every error names the tap and the offending field.
absl::Status Validate(const TapPolicy& policy);

std::string ToString(Protocol p);
std::string ToString(const PortRange& r);
std::string ToString(const AllowRule& r);

}  // namespace forkd::netfilter
