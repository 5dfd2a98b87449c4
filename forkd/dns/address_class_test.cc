#include "forkd/dns/address_class.h"

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "netfilter/metadata.h"

namespace forkd::dns {
namespace {

AddressClass Of(const std::string& text) {
  auto a = netfilter::IpAddress::Parse(text);
  EXPECT_TRUE(a.ok()) << text;
  return a.ok() ? Classify(*a) : AddressClass::kPublic;
}

TEST(AddressClass, EveryNonPublicRangeHasItsReason) {
  const std::vector<std::pair<std::string, AddressClass>> cases = {
      {"0.0.0.0", AddressClass::kUnspecified},
      {"0.1.2.3", AddressClass::kUnspecified},
      {"::", AddressClass::kUnspecified},
      {"127.0.0.1", AddressClass::kLoopback},
      {"127.255.255.254", AddressClass::kLoopback},
      {"::1", AddressClass::kLoopback},
      {"10.0.0.5", AddressClass::kPrivate},
      {"172.16.0.1", AddressClass::kPrivate},
      {"172.31.255.255", AddressClass::kPrivate},
      {"192.168.1.1", AddressClass::kPrivate},
      {"100.64.0.1", AddressClass::kCgnat},
      {"100.127.255.255", AddressClass::kCgnat},
      {"169.254.169.254", AddressClass::kMetadata},
      {"169.254.0.1", AddressClass::kMetadata},
      {"168.63.129.16", AddressClass::kMetadata},
      {"100.100.100.200", AddressClass::kMetadata},
      {"fd00:ec2::254", AddressClass::kMetadata},
      {"fd00:ec2::1", AddressClass::kMetadata},
      {"fe80::1", AddressClass::kLinkLocal},
      {"febf::1", AddressClass::kLinkLocal},
      {"fc00::1", AddressClass::kUla},
      {"fd12:3456::1", AddressClass::kUla},
      {"fec0::1", AddressClass::kSiteLocal},
      {"feff::1", AddressClass::kSiteLocal},
      {"224.0.0.1", AddressClass::kMulticast},
      {"239.255.255.250", AddressClass::kMulticast},
      {"ff02::1", AddressClass::kMulticast},
      {"240.0.0.1", AddressClass::kReserved},
      {"255.255.255.255", AddressClass::kReserved},
      {"::ffff:169.254.169.254",
       AddressClass::kMetadata},  // netfilter/metadata.h lists the mapped form
      {"::ffff:8.8.8.8", AddressClass::kV4Mapped},
      {"::10.0.0.1", AddressClass::kV4Mapped},
      // NAT64 and 6to4 wrappers are judged as the IPv4 inside.
      {"64:ff9b::a9fe:a9fe", AddressClass::kMetadata},       // 169.254.169.254
      {"64:ff9b::a00:5", AddressClass::kNat64Embedded},      // 10.0.0.5
      {"64:ff9b::7f00:1", AddressClass::kNat64Embedded},     // 127.0.0.1
      {"64:ff9b::a83f:8110", AddressClass::kMetadata},       // 168.63.129.16
      {"64:ff9b:1::808:808", AddressClass::kNat64Embedded},  // local-use NAT64
      {"2002:a9fe:a9fe::1", AddressClass::kMetadata},
      {"2002:a00:5::1", AddressClass::k6to4Embedded},
      {"2002:c0a8:101::1", AddressClass::k6to4Embedded},
      {"2002:6464:64c8::1", AddressClass::kMetadata},  // 100.100.100.200
  };
  for (const auto& [text, want] : cases) {
    EXPECT_EQ(Of(text), want) << text << " is " << ToString(Of(text)) << ", want "
                              << ToString(want);
  }
}

TEST(AddressClass, PublicAddressesStayPublicIncludingNat64OfPublic) {
  for (const char* text :
       {"8.8.8.8",         "1.1.1.1",        "203.0.113.10", "198.51.100.20",   "172.32.0.1",
        "172.15.255.255",  "100.63.255.255", "100.128.0.0",  "169.253.255.255", "169.255.0.0",
        "223.255.255.255", "11.0.0.1",       "2001:db8::10", "2606:4700::1111", "64:ff9b::808:808",
        "2002:808:808::1", "fbff::1",        "fe7f::1",      "::ffff:0:0:0",    "64:ff9b:2::1"}) {
    EXPECT_EQ(Of(text), AddressClass::kPublic) << text << " is " << ToString(Of(text));
  }
}

TEST(AddressClass, MetadataTable) {
  EXPECT_TRUE(netfilter::IsCloudMetadata(*netfilter::IpAddress::Parse("169.254.169.254")));
  EXPECT_TRUE(netfilter::IsCloudMetadata(*netfilter::IpAddress::Parse("64:ff9b::a9fe:a9fe")));
  EXPECT_TRUE(netfilter::IsCloudMetadata(*netfilter::IpAddress::Parse("2002:a83f:8110::")));
  EXPECT_FALSE(netfilter::IsCloudMetadata(*netfilter::IpAddress::Parse("168.63.129.17")));
  EXPECT_FALSE(netfilter::IsCloudMetadata(*netfilter::IpAddress::Parse("fd00:ec2:0:1::254")));
}

TEST(AddressClass, NamesAreDistinct) {
  for (int i = 0; i < kAddressClassCount; ++i) {
    for (int j = i + 1; j < kAddressClassCount; ++j) {
      EXPECT_NE(ToString(static_cast<AddressClass>(i)), ToString(static_cast<AddressClass>(j)));
    }
  }
}

}  // namespace
}  // namespace forkd::dns
