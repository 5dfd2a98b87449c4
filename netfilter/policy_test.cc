#include "netfilter/policy.h"

#include "gtest/gtest.h"

namespace forkd::netfilter {
namespace {

TapPolicy Base() {
  TapPolicy p;
  p.tap = "sbt0";
  p.guest_v4 = *IpAddress::Parse("10.200.0.2");
  p.resolvers = {*IpAddress::Parse("169.254.1.1")};
  return p;
}

AllowRule Allow(const char* cidr, Protocol proto = Protocol::kAny,
                std::vector<PortRange> ports = {}) {
  return AllowRule{*Cidr::Parse(cidr), proto, std::move(ports)};
}

void ExpectInvalid(const TapPolicy& p, const std::string& needle) {
  absl::Status s = Validate(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find(needle), std::string::npos)
      << "message \"" << s.message() << "\" lacks \"" << needle << "\"";
}

TEST(Validate, AcceptsARealisticPolicy) {
  TapPolicy p = Base();
  p.guest_v6 = *IpAddress::Parse("fd42::2");
  p.allow = {Allow("203.0.113.0/24", Protocol::kTcp, {{443, 443}, {8000, 8080}}),
             Allow("198.51.100.7/32"), Allow("2001:db8::/32", Protocol::kUdp, {{53, 53}})};
  p.private_exceptions = {*Cidr::Parse("10.1.0.0/16")};
  p.allow.push_back(Allow("10.1.2.0/24", Protocol::kTcp, {{5432, 5432}}));
  EXPECT_TRUE(Validate(p).ok()) << Validate(p);
}

TEST(Validate, TapNameLongerThanIfnamsizMinusOne) {
  TapPolicy p = Base();
  p.tap = "abcdefghijklmnop";  // 16 characters
  ExpectInvalid(p, "longer than 15");
  p.tap = "abcdefghijklmno";  // 15 is fine
  EXPECT_TRUE(Validate(p).ok());
}

TEST(Validate, TapNameWithIllegalCharacters) {
  for (const char* bad : {"", "-tap", "_tap", "tap 0", "tap/0", "tap.0", "täp", "tap;rm"}) {
    TapPolicy p = Base();
    p.tap = bad;
    EXPECT_FALSE(Validate(p).ok()) << bad;
  }
  TapPolicy p = Base();
  p.tap = "tap/0";
  ExpectInvalid(p, "illegal character at offset 3");
}

TEST(Validate, PortZero) {
  TapPolicy p = Base();
  p.allow = {Allow("203.0.113.0/24", Protocol::kTcp, {{0, 0}})};
  ExpectInvalid(p, "port 0");
  p.allow = {Allow("203.0.113.0/24", Protocol::kTcp, {{0, 80}})};
  ExpectInvalid(p, "port 0");
}

TEST(Validate, InvertedRange) {
  TapPolicy p = Base();
  p.allow = {Allow("203.0.113.0/24", Protocol::kTcp, {{9000, 8000}})};
  ExpectInvalid(p, "inverted port range 9000-8000");
}

TEST(Validate, OverlappingPortRangesInOneRule) {
  TapPolicy p = Base();
  p.allow = {Allow("203.0.113.0/24", Protocol::kTcp, {{80, 90}, {85, 100}})};
  ExpectInvalid(p, "overlap");
}

TEST(Validate, DuplicateRules) {
  TapPolicy p = Base();
  p.allow = {Allow("203.0.113.0/24", Protocol::kTcp, {{443, 443}}),
             Allow("203.0.113.0/24", Protocol::kTcp, {{443, 443}})};
  ExpectInvalid(p, "duplicate allow rule 203.0.113.0/24 tcp 443");
  p.allow = {Allow("203.0.113.0/24", Protocol::kTcp, {{443, 443}}),
             Allow("203.0.113.0/24", Protocol::kUdp, {{443, 443}})};
  EXPECT_TRUE(Validate(p).ok());
}

TEST(Validate, ProtocolWithoutPortsIsAmbiguous) {
  TapPolicy p = Base();
  p.allow = {Allow("203.0.113.0/24", Protocol::kTcp, {})};
  ExpectInvalid(p, "a protocol needs ports");
}

TEST(Validate, AllowInsideBlockedPrivateRangeNeedsException) {
  TapPolicy p = Base();
  p.allow = {Allow("10.0.0.5/32", Protocol::kTcp, {{5432, 5432}})};
  ExpectInvalid(p, "private range 10.0.0.0/8");
  p.private_exceptions = {*Cidr::Parse("10.0.0.0/24")};
  EXPECT_TRUE(Validate(p).ok()) << Validate(p);
}

TEST(Validate, BroadAllowOverlappingPrivateIsFine) {
  TapPolicy p = Base();
  p.allow = {Allow("0.0.0.0/0")};  // private parts stay blocked
  EXPECT_TRUE(Validate(p).ok());
}

TEST(Validate, ExceptionOutsidePrivateRanges) {
  TapPolicy p = Base();
  p.private_exceptions = {*Cidr::Parse("8.8.8.0/24")};
  ExpectInvalid(p, "not inside a private range");
  p.private_exceptions = {*Cidr::Parse("10.1.0.0/16"), *Cidr::Parse("10.1.0.0/16")};
  ExpectInvalid(p, "duplicate private exception");
}

TEST(Validate, Ipv6RuleWithoutGuestIpv6) {
  TapPolicy p = Base();
  p.allow = {Allow("2001:db8::/32")};
  ExpectInvalid(p, "guest has no IPv6 address");
}

TEST(Validate, Resolvers) {
  TapPolicy p = Base();
  p.resolvers.push_back(*IpAddress::Parse("169.254.1.2"));
  ExpectInvalid(p, "more than one resolver");
  p = Base();
  p.resolvers = {*IpAddress::Parse("169.254.169.254")};
  ExpectInvalid(p, "metadata");
  p = Base();
  p.resolvers = {*IpAddress::Parse("fd42::1")};
  ExpectInvalid(p, "IPv6 resolver");
}

TEST(Validate, GuestAddressFamilies) {
  TapPolicy p = Base();
  p.guest_v4 = *IpAddress::Parse("fd42::2");
  ExpectInvalid(p, "guest_v4 is not an IPv4");
  p = Base();
  p.guest_v4 = IpAddress::V4(0, 0, 0, 0);
  ExpectInvalid(p, "unset");
  p = Base();
  p.guest_v6 = *IpAddress::Parse("10.0.0.1");
  ExpectInvalid(p, "guest_v6 is not an IPv6");
}

TEST(Validate, PinLimit) {
  TapPolicy p = Base();
  p.pins.max_elements = 0;
  ExpectInvalid(p, "max_elements");
}

}  // namespace
}  // namespace forkd::netfilter
