// Which answer addresses a sandbox may be given: everything public, nothing
// that reaches the pod, the node, the cluster or the cloud's metadata service,
// however the address is spelled (plain, IPv4-mapped, NAT64, 6to4).
#pragma once

#include <cstdint>
#include <string_view>

#include "netfilter/ip.h"

namespace forkd::dns {

// Why an address is not public (or kPublic). Also the metric label of a
// stripped record, so the names are stable.
enum class AddressClass : uint8_t {
  kPublic,
  kUnspecified,    // 0.0.0.0/8, ::/128
  kLoopback,       // 127.0.0.0/8, ::1
  kPrivate,        // RFC 1918: 10/8, 172.16/12, 192.168/16
  kCgnat,          // 100.64.0.0/10
  kLinkLocal,      // fe80::/10 (169.254/16 is all metadata, below)
  kUla,            // fc00::/7
  kSiteLocal,      // fec0::/10
  kMulticast,      // 224.0.0.0/4, ff00::/8
  kReserved,       // 240.0.0.0/4 (includes 255.255.255.255)
  kV4Mapped,       // ::ffff:0:0/96, and IPv4-compatible ::/96
  kMetadata,       // netfilter::IsCloudMetadata (netfilter/metadata.h), also when embedded
  kNat64Embedded,  // 64:ff9b::/96 wrapping a non-public IPv4; 64:ff9b:1::/48
  k6to4Embedded,   // 2002::/16 wrapping a non-public IPv4
};

inline constexpr int kAddressClassCount = static_cast<int>(AddressClass::k6to4Embedded) + 1;

// "loopback", "rfc1918", "metadata", ...
std::string_view ToString(AddressClass c);

// Classifies one address. Embedded IPv4 (NAT64 64:ff9b::/96, 6to4 2002::/16)
// is judged as the IPv4 it wraps: a NAT64 wrapper of a public IPv4 is public,
// a wrapper of the metadata address is kMetadata, any other non-public one is
// kNat64Embedded / k6to4Embedded.
AddressClass Classify(const netfilter::IpAddress& address);

}  // namespace forkd::dns
