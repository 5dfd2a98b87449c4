#include "netfilter/metadata.h"

#include "gtest/gtest.h"

namespace forkd::netfilter {
namespace {

bool Meta(const char* text) { return IsCloudMetadata(*IpAddress::Parse(text)); }

TEST(Metadata, EveryDocumentedEndpointIsInTheTable) {
  for (const char* a :
       {"169.254.169.254", "169.254.169.253", "169.254.169.123", "169.254.0.23", "169.254.0.0",
        "169.254.255.255", "168.63.129.16", "100.100.100.200", "fd00:ec2::254", "fd00:ec2::253",
        "fd00:ec2::123", "fd00:ec2::ffff:ffff:ffff:ffff"}) {
    EXPECT_TRUE(Meta(a)) << a;
  }
}

TEST(Metadata, EmbeddedIpv4FormsAreMetadataToo) {
  for (const char* a :
       {"64:ff9b::169.254.169.254", "64:ff9b::a9fe:1", "64:ff9b::168.63.129.16",
        "64:ff9b::100.100.100.200", "2002:a9fe:a9fe::", "2002:a9fe:1:2:3::4", "2002:a83f:8110::1",
        "2002:6464:64c8:ffff::", "::ffff:169.254.169.254", "::ffff:168.63.129.16"}) {
    EXPECT_TRUE(Meta(a)) << a;
    EXPECT_TRUE(EmbeddedV4(*IpAddress::Parse(a))) << a;
  }
}

TEST(Metadata, NeighboursOfTheEntriesAreNot) {
  // Positive controls for the checks above: the table is not "everything".
  for (const char* a :
       {"169.253.255.255", "169.255.0.0", "168.63.129.15", "168.63.129.17", "100.100.100.199",
        "100.100.100.201", "8.8.8.8", "fd00:ec2:0:1::254", "fd00:ec3::254", "64:ff9b::808:808",
        "64:ff9b::a83f:8111", "64:ff9b:1::a9fe:a9fe",
        "2002:808:808::", "2002:a9ff::", "::ffff:8.8.8.8", "2001:db8::254"}) {
    EXPECT_FALSE(Meta(a)) << a;
  }
}

TEST(Metadata, EveryEntryNamesWhatAndWhere) {
  for (const auto* table : {&CloudMetadataV4(), &CloudMetadataV6()}) {
    for (const MetadataEntry& e : *table) {
      EXPECT_FALSE(e.what.empty()) << e.range.ToString();
      EXPECT_FALSE(e.source.empty()) << e.range.ToString();
    }
  }
  // fd00:ec2::/64 plus three embeddings of each of the three IPv4 entries.
  EXPECT_EQ(CloudMetadataV4().size(), 3u);
  EXPECT_EQ(CloudMetadataV6().size(), 1u + 3u * 3u);
}

}  // namespace
}  // namespace forkd::netfilter
