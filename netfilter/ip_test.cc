#include "netfilter/ip.h"

#include "gtest/gtest.h"

namespace forkd::netfilter {
namespace {

TEST(IpAddress, ParsesBothFamiliesAndRoundTrips) {
  auto v4 = IpAddress::Parse("10.200.0.2");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->family, Family::kV4);
  EXPECT_EQ(v4->ToString(), "10.200.0.2");
  auto v6 = IpAddress::Parse("fd00:ec2::254");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->family, Family::kV6);
  EXPECT_EQ(v6->ToString(), "fd00:ec2::254");
}

TEST(IpAddress, RefusesGarbage) {
  for (const char* bad :
       {"", "10.0.0", "10.0.0.256", "1.2.3.4.5", "::g", "10.0.0.1 ", "localhost"}) {
    EXPECT_FALSE(IpAddress::Parse(bad).ok()) << bad;
  }
}

TEST(Cidr, ParsesPrefixesAndBareAddresses) {
  EXPECT_EQ(Cidr::Parse("10.0.0.0/8")->prefix, 8);
  EXPECT_EQ(Cidr::Parse("10.0.0.7")->prefix, 32);
  EXPECT_EQ(Cidr::Parse("fc00::/7")->prefix, 7);
  EXPECT_EQ(Cidr::Parse("0.0.0.0/0")->prefix, 0);
}

TEST(Cidr, RefusesBadPrefixesAndHostBits) {
  for (const char* bad : {"10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "10.0.0.0/8x", "fc00::/129",
                          "10.0.0.1/8", "nonsense/8"}) {
    auto c = Cidr::Parse(bad);
    EXPECT_FALSE(c.ok()) << bad;
    EXPECT_NE(std::string(c.status().message()).find("invalid CIDR"), std::string::npos) << bad;
  }
  EXPECT_NE(std::string(Cidr::Parse("10.0.0.1/8").status().message()).find("host bits"),
            std::string::npos);
}

TEST(Cidr, ContainmentAndOverlap) {
  const Cidr ten = *Cidr::Parse("10.0.0.0/8");
  const Cidr sub = *Cidr::Parse("10.1.0.0/16");
  EXPECT_TRUE(ten.Contains(*IpAddress::Parse("10.255.0.1")));
  EXPECT_FALSE(ten.Contains(*IpAddress::Parse("11.0.0.1")));
  EXPECT_FALSE(ten.Contains(*IpAddress::Parse("::a00:1")));
  EXPECT_TRUE(ten.Covers(sub));
  EXPECT_FALSE(sub.Covers(ten));
  EXPECT_TRUE(sub.Overlaps(ten));
  EXPECT_FALSE(sub.Overlaps(*Cidr::Parse("10.2.0.0/16")));
  EXPECT_TRUE(Cidr::Parse("fc00::/7")->Contains(*IpAddress::Parse("fd12::1")));
}

TEST(PrivateRanges, AreTheDesignedSix) {
  std::vector<std::string> got;
  for (const Cidr& c : PrivateRanges()) got.push_back(c.ToString());
  EXPECT_EQ(got, (std::vector<std::string>{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                           "100.64.0.0/10", "fc00::/7", "fe80::/10"}));
}

}  // namespace
}  // namespace forkd::netfilter
