#include "netfilter/ip.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace forkd::netfilter {
namespace {

bool PrefixBitsEqual(const IpAddress& a, const IpAddress& b, int bits) {
  const int whole = bits / 8;
  if (std::memcmp(a.bytes.data(), b.bytes.data(), whole) != 0) return false;
  const int rest = bits % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a.bytes[whole] & mask) == (b.bytes[whole] & mask);
}

}  // namespace

absl::StatusOr<IpAddress> IpAddress::Parse(std::string_view text) {
  const std::string s(text);
  IpAddress out;
  if (s.find(':') == std::string::npos) {
    out.family = Family::kV4;
    if (::inet_pton(AF_INET, s.c_str(), out.bytes.data()) == 1) return out;
  } else {
    out.family = Family::kV6;
    if (::inet_pton(AF_INET6, s.c_str(), out.bytes.data()) == 1) return out;
  }
  return absl::InvalidArgumentError("invalid IP address \"" + s + "\"");
}

IpAddress IpAddress::V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  IpAddress out;
  out.bytes[0] = a;
  out.bytes[1] = b;
  out.bytes[2] = c;
  out.bytes[3] = d;
  return out;
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family == Family::kV4 ? AF_INET : AF_INET6, bytes.data(), buf, sizeof(buf));
  return buf;
}

absl::StatusOr<Cidr> Cidr::Parse(std::string_view text) {
  const size_t slash = text.find('/');
  auto addr = IpAddress::Parse(text.substr(0, slash));
  if (!addr.ok()) return absl::InvalidArgumentError("invalid CIDR \"" + std::string(text) + "\"");
  Cidr out{*addr, addr->max_prefix()};
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    int prefix = -1;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (p.empty() || ec != std::errc() || end != p.data() + p.size() || prefix < 0 ||
        prefix > out.address.max_prefix()) {
      return absl::InvalidArgumentError("invalid CIDR \"" + std::string(text) +
                                        "\": prefix length must be 0.." +
                                        std::to_string(out.address.max_prefix()));
    }
    out.prefix = prefix;
  }
  const auto mask = out.Mask();
  for (size_t i = 0; i < out.address.size(); ++i) {
    if ((out.address.bytes[i] & ~mask[i]) != 0) {
      return absl::InvalidArgumentError("invalid CIDR \"" + std::string(text) +
                                        "\": host bits set beyond /" + std::to_string(out.prefix));
    }
  }
  return out;
}

bool Cidr::Contains(const IpAddress& a) const {
  return a.family == address.family && PrefixBitsEqual(address, a, prefix);
}

bool Cidr::Covers(const Cidr& inner) const {
  return inner.family() == family() && inner.prefix >= prefix && Contains(inner.address);
}

bool Cidr::Overlaps(const Cidr& other) const { return Covers(other) || other.Covers(*this); }

std::array<uint8_t, 16> Cidr::Mask() const {
  std::array<uint8_t, 16> mask{};
  for (int bit = 0; bit < prefix; ++bit) mask[bit / 8] |= static_cast<uint8_t>(0x80 >> (bit % 8));
  return mask;
}

std::string Cidr::ToString() const { return address.ToString() + "/" + std::to_string(prefix); }

const std::array<Cidr, 6>& PrivateRanges() {
  static const std::array<Cidr, 6> ranges = {
      *Cidr::Parse("10.0.0.0/8"),    *Cidr::Parse("172.16.0.0/12"), *Cidr::Parse("192.168.0.0/16"),
      *Cidr::Parse("100.64.0.0/10"), *Cidr::Parse("fc00::/7"),      *Cidr::Parse("fe80::/10"),
  };
  return ranges;
}

}  // namespace forkd::netfilter
