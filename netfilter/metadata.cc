#include "netfilter/metadata.h"

#include <algorithm>
#include <string>

namespace forkd::netfilter {
namespace {

Cidr C(const char* text) { return *Cidr::Parse(text); }

// An IPv4 prefix embedded at byte `offset` of an IPv6 prefix `base`.
Cidr Embed(const Cidr& v4, const IpAddress& base, int offset) {
  IpAddress a = base;
  for (size_t i = 0; i < 4; ++i) a.bytes[offset + i] = v4.address.bytes[i];
  return Cidr{a, offset * 8 + v4.prefix};
}

struct Embedding {
  const char* prefix;
  int offset;  // byte offset of the IPv4 address
  std::string_view source;
};

constexpr Embedding kEmbeddings[] = {
    {"64:ff9b::", 12, "NAT64 well-known prefix 64:ff9b::/96, RFC 6052 section 2.1"},
    {"2002::", 2, "6to4 2002::/16, RFC 3056 section 2"},
    {"::ffff:0:0", 12, "IPv4-mapped ::ffff:0:0/96, RFC 4291 section 2.5.5.2"},
};

}  // namespace

const std::vector<MetadataEntry>& CloudMetadataV4() {
  static const std::vector<MetadataEntry> table = {
      {C("169.254.0.0/16"),
       "IPv4 link-local: the instance metadata service of AWS, GCP, Azure, Oracle, OpenStack and "
       "DigitalOcean at 169.254.169.254, AWS DNS/NTP at 169.254.169.253/.123, Tencent at "
       "169.254.0.23",
       "RFC 3927; docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html; "
       "cloud.google.com/compute/docs/metadata/overview; "
       "learn.microsoft.com/azure/virtual-machines/instance-metadata-service"},
      {C("168.63.129.16/32"), "Azure WireServer (host agent, health probes, platform DNS)",
       "learn.microsoft.com/azure/virtual-network/what-is-ip-address-168-63-129-16"},
      {C("100.100.100.200/32"), "Alibaba Cloud ECS instance metadata",
       "alibabacloud.com/help/en/ecs/user-guide/overview-of-ecs-instance-metadata"},
  };
  return table;
}

const std::vector<MetadataEntry>& CloudMetadataV6() {
  static const std::vector<MetadataEntry> table = [] {
    std::vector<MetadataEntry> t = {
        {C("fd00:ec2::/64"),
         "AWS Nitro IPv6 endpoints: metadata fd00:ec2::254, DNS ::253, NTP ::123 (the whole /64, "
         "not only ::254)",
         "docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html"},
    };
    for (const Embedding& e : kEmbeddings) {
      const IpAddress base = *IpAddress::Parse(e.prefix);
      for (const MetadataEntry& v4 : CloudMetadataV4()) {
        t.push_back({Embed(v4.range, base, e.offset), v4.what, e.source});
      }
    }
    return t;
  }();
  return table;
}

std::optional<IpAddress> EmbeddedV4(const IpAddress& a) {
  if (a.family != Family::kV6) return std::nullopt;
  for (const Embedding& e : kEmbeddings) {
    const Cidr outer{*IpAddress::Parse(e.prefix), e.offset == 2 ? 16 : 96};
    if (!outer.Contains(a)) continue;
    IpAddress v4;
    for (size_t i = 0; i < 4; ++i) v4.bytes[i] = a.bytes[e.offset + i];
    return v4;
  }
  return std::nullopt;
}

bool IsCloudMetadata(const IpAddress& a) {
  const auto& table = a.family == Family::kV4 ? CloudMetadataV4() : CloudMetadataV6();
  if (std::any_of(table.begin(), table.end(),
                  [&](const MetadataEntry& e) { return e.range.Contains(a); })) {
    return true;
  }
  const std::optional<IpAddress> v4 = EmbeddedV4(a);
  return v4 && IsCloudMetadata(*v4);
}

}  // namespace forkd::netfilter
