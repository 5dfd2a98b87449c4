#include "forkd/dns/address_class.h"

#include <array>

#include "netfilter/metadata.h"

namespace forkd::dns {
namespace {

using netfilter::Family;
using netfilter::IpAddress;

bool InV4(const IpAddress& a, uint8_t b0, uint8_t b1, int prefix) {
  const uint32_t v = (uint32_t{a.bytes[0]} << 24) | (uint32_t{a.bytes[1]} << 16) |
                     (uint32_t{a.bytes[2]} << 8) | uint32_t{a.bytes[3]};
  const uint32_t net = (uint32_t{b0} << 24) | (uint32_t{b1} << 16);
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return (v & mask) == net;
}

// True when the first `prefix` bits of `a` (IPv6) equal those of `net`.
bool InV6(const IpAddress& a, const std::array<uint8_t, 16>& net, int prefix) {
  for (int i = 0; i < 16 && prefix > 0; ++i, prefix -= 8) {
    const uint8_t mask = prefix >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - prefix));
    if ((a.bytes[i] & mask) != (net[i] & mask)) return false;
  }
  return true;
}

IpAddress V4At(const IpAddress& a, int offset) {
  return IpAddress::V4(a.bytes[offset], a.bytes[offset + 1], a.bytes[offset + 2],
                       a.bytes[offset + 3]);
}

AddressClass ClassifyV4(const IpAddress& a) {
  if (netfilter::IsCloudMetadata(a)) return AddressClass::kMetadata;
  if (InV4(a, 0, 0, 8)) return AddressClass::kUnspecified;
  if (InV4(a, 127, 0, 8)) return AddressClass::kLoopback;
  if (InV4(a, 10, 0, 8) || InV4(a, 172, 16, 12) || InV4(a, 192, 168, 16)) {
    return AddressClass::kPrivate;
  }
  if (InV4(a, 100, 64, 10)) return AddressClass::kCgnat;
  if (InV4(a, 224, 0, 4)) return AddressClass::kMulticast;
  if (InV4(a, 240, 0, 4)) return AddressClass::kReserved;
  return AddressClass::kPublic;
}

constexpr std::array<uint8_t, 16> kZero{};
constexpr std::array<uint8_t, 16> kV4MappedNet{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
constexpr std::array<uint8_t, 16> kNat64Net{0, 0x64, 0xff, 0x9b};
constexpr std::array<uint8_t, 16> kNat64LocalNet{0, 0x64, 0xff, 0x9b, 0, 1};
constexpr std::array<uint8_t, 16> k6to4Net{0x20, 0x02};
constexpr std::array<uint8_t, 16> kLinkLocalNet{0xfe, 0x80};
constexpr std::array<uint8_t, 16> kSiteLocalNet{0xfe, 0xc0};
constexpr std::array<uint8_t, 16> kUlaNet{0xfc};
constexpr std::array<uint8_t, 16> kMulticastNet{0xff};

// An embedded IPv4 is judged as itself; only the reason says how it arrived.
AddressClass Embedded(const IpAddress& v4, AddressClass wrapper) {
  const AddressClass inner = ClassifyV4(v4);
  if (inner == AddressClass::kPublic || inner == AddressClass::kMetadata) return inner;
  return wrapper;
}

AddressClass ClassifyV6(const IpAddress& a) {
  if (netfilter::IsCloudMetadata(a)) return AddressClass::kMetadata;
  if (a.bytes == kZero) return AddressClass::kUnspecified;
  std::array<uint8_t, 16> loopback{};
  loopback[15] = 1;
  if (a.bytes == loopback) return AddressClass::kLoopback;
  // ::ffff:a.b.c.d and the deprecated ::a.b.c.d both reach IPv4 a.b.c.d on a
  // dual-stack host's socket: never hand them out, whatever they wrap.
  if (InV6(a, kV4MappedNet, 96) || InV6(a, kZero, 96)) return AddressClass::kV4Mapped;
  if (InV6(a, kNat64LocalNet, 48)) return AddressClass::kNat64Embedded;
  if (InV6(a, kNat64Net, 96)) return Embedded(V4At(a, 12), AddressClass::kNat64Embedded);
  if (InV6(a, k6to4Net, 16)) return Embedded(V4At(a, 2), AddressClass::k6to4Embedded);
  if (InV6(a, kLinkLocalNet, 10)) return AddressClass::kLinkLocal;
  if (InV6(a, kSiteLocalNet, 10)) return AddressClass::kSiteLocal;
  if (InV6(a, kUlaNet, 7)) return AddressClass::kUla;
  if (InV6(a, kMulticastNet, 8)) return AddressClass::kMulticast;
  return AddressClass::kPublic;
}

}  // namespace

std::string_view ToString(AddressClass c) {
  switch (c) {
    case AddressClass::kPublic:
      return "public";
    case AddressClass::kUnspecified:
      return "unspecified";
    case AddressClass::kLoopback:
      return "loopback";
    case AddressClass::kPrivate:
      return "rfc1918";
    case AddressClass::kCgnat:
      return "cgnat";
    case AddressClass::kLinkLocal:
      return "link_local";
    case AddressClass::kUla:
      return "ula";
    case AddressClass::kSiteLocal:
      return "site_local";
    case AddressClass::kMulticast:
      return "multicast";
    case AddressClass::kReserved:
      return "reserved";
    case AddressClass::kV4Mapped:
      return "v4_mapped";
    case AddressClass::kMetadata:
      return "metadata";
    case AddressClass::kNat64Embedded:
      return "nat64_embedded";
    case AddressClass::k6to4Embedded:
      return "6to4_embedded";
  }
  return "unknown";
}

AddressClass Classify(const IpAddress& address) {
  return address.family == Family::kV4 ? ClassifyV4(address) : ClassifyV6(address);
}

}  // namespace forkd::dns
