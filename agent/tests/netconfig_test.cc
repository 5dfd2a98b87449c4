// Parsing only: applying a config touches an interface, which is tested in a
// private network namespace (netconfig_netns_test.cc), never on the host.
#include "agent/netconfig.h"

#include <arpa/inet.h>

#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

TEST(ParseNetworkTest, ParsesAFullConfig) {
  v1::Network n;
  n.set_ipv4_cidr("10.0.0.2/30");
  n.set_ipv6_cidr("fd00::2/64");
  n.set_ipv4_gateway("10.0.0.1");
  n.set_ipv6_gateway("fd00::1");
  n.set_mac("02:00:0a:00:00:02");
  auto c = ParseNetwork(n);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->ipv4.has_value());
  EXPECT_EQ(c->ipv4->prefix_len, 30);
  EXPECT_EQ(ntohl(c->ipv4->addr.s_addr), 0x0a000002u);
  ASSERT_TRUE(c->ipv6.has_value());
  EXPECT_EQ(c->ipv6->prefix_len, 64);
  ASSERT_TRUE(c->ipv4_gateway.has_value());
  EXPECT_EQ(ntohl(c->ipv4_gateway->s_addr), 0x0a000001u);
  ASSERT_TRUE(c->ipv6_gateway.has_value());
  ASSERT_TRUE(c->mac.has_value());
  EXPECT_EQ((*c->mac)[2], 0x0a);
}

TEST(ParseNetworkTest, EmptyMeansNothingToSet) {
  auto c = ParseNetwork(v1::Network());
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->ipv4 || c->ipv6 || c->ipv4_gateway || c->ipv6_gateway || c->mac);
}

TEST(ParseNetworkTest, RefusesBadInput) {
  auto bad = [](auto mutate) {
    v1::Network n;
    n.set_ipv4_cidr("10.0.0.2/30");
    mutate(n);
    return ParseNetwork(n).status();
  };
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_ipv4_cidr("10.0.0.2"); }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_ipv4_cidr("10.0.0.2/33"); }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_ipv4_cidr("10.0.0.2/"); }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_ipv4_cidr("10.0.0.2/-1"); }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_ipv4_cidr("fd00::1/64"); }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_ipv6_cidr("fd00::1/129"); }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_ipv4_gateway("10.0.0.300"); }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_ipv6_gateway("fd00::1"); }).ok());  // no ipv6
  EXPECT_FALSE(bad([](v1::Network& n) {
                 n.clear_ipv4_cidr();
                 n.set_ipv4_gateway("10.0.0.1");
               }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_mac("02:00:00:00:00"); }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_mac("02:00:00:00:00:0g"); }).ok());
  EXPECT_FALSE(bad([](v1::Network& n) { n.set_mac("01:00:00:00:00:01"); }).ok());  // multicast
}

}  // namespace
}  // namespace forkd::agent
