// IPv4/IPv6 addresses and prefixes: parsing, printing, containment. Pure data;
// the ruleset model and the netlink encoder both build on these.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace forkd::netfilter {

enum class Family : uint8_t { kV4, kV6 };

struct IpAddress {
  Family family = Family::kV4;
  // Network byte order; only the first 4 bytes are used for IPv4.
  std::array<uint8_t, 16> bytes{};

  static absl::StatusOr<IpAddress> Parse(std::string_view text);
  static IpAddress V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);

  size_t size() const { return family == Family::kV4 ? 4 : 16; }
  int max_prefix() const { return family == Family::kV4 ? 32 : 128; }
  std::string ToString() const;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

// An address prefix. Parse() refuses host bits set beyond the prefix
// ("10.0.0.1/8" is an error, not silently 10.0.0.0/8): a policy author who
// wrote it almost certainly meant something else.
struct Cidr {
  IpAddress address;
  int prefix = 0;

  // "10.0.0.0/8", "fd00::/8"; a bare address means a full-length prefix.
  static absl::StatusOr<Cidr> Parse(std::string_view text);
  static Cidr Host(const IpAddress& a) { return Cidr{a, a.max_prefix()}; }

  Family family() const { return address.family; }
  bool Contains(const IpAddress& a) const;
  // True when every address of `inner` is inside this prefix.
  bool Covers(const Cidr& inner) const;
  bool Overlaps(const Cidr& other) const;
  // The netmask in network byte order (address.size() bytes used).
  std::array<uint8_t, 16> Mask() const;
  std::string ToString() const;

  friend bool operator==(const Cidr&, const Cidr&) = default;
};

// The ranges the datapath blocks unless a policy excepts them (docs/datapath.md).
const std::array<Cidr, 6>& PrivateRanges();

}  // namespace forkd::netfilter
