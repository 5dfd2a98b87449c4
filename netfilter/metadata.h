// Cloud metadata endpoints: ONE named, documented table. The datapath drops
// traffic to every entry in every mode (allow-all, `0.0.0.0/0` / `::/0` allow
// rules, private exceptions included); the DNS proxy strips answers that point
// at any of them (IsCloudMetadata).
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "netfilter/ip.h"

namespace forkd::netfilter {

struct MetadataEntry {
  Cidr range;
  std::string_view what;    // which service lives there
  std::string_view source;  // where that is documented
};

// The IPv4 entries: what the clouds document.
const std::vector<MetadataEntry>& CloudMetadataV4();

// The IPv6 entries: AWS's own IPv6 endpoints plus every IPv4 entry embedded in
// the IPv6 forms a NAT64 or 6to4 gateway (or a confused stack) turns back into
// that IPv4 destination: NAT64 64:ff9b::/96 (RFC 6052), 6to4 2002::/16
// (RFC 3056) and IPv4-mapped ::ffff:0:0/96 (RFC 4291).
const std::vector<MetadataEntry>& CloudMetadataV6();

// True when `a` is inside an entry of either table. IPv6 addresses that embed
// an IPv4 address (the three forms above) are judged by the embedded address.
bool IsCloudMetadata(const IpAddress& a);

// The IPv4 address embedded in `a` when `a` is NAT64 (64:ff9b::/96), 6to4
// (2002::/16) or IPv4-mapped (::ffff:0:0/96); nullopt otherwise.
std::optional<IpAddress> EmbeddedV4(const IpAddress& a);

}  // namespace forkd::netfilter
