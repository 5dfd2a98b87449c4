// Every message the encoders build stays inside the batch's per-message
// reservation at the policy caps: Batch::Commit aborts the test otherwise
// (and the ASan build, scripts/sanitize, catches any write past it).
#include <netinet/in.h>

#include "gtest/gtest.h"
#include "netfilter/nft_encode.h"
#include "netfilter/nftables.h"
#include "netfilter/ruleset.h"

namespace forkd::netfilter {
namespace {

TapPolicy Largest() {
  TapPolicy p;
  p.tap = "sbt0";
  p.guest_v4 = *IpAddress::Parse("10.200.0.2");
  p.guest_v6 = *IpAddress::Parse("fd42::2");
  p.resolvers = {*IpAddress::Parse("169.254.1.1"), *IpAddress::Parse("fd42::1")};
  // The most exceptions, all inside one range: one rule carries them all.
  for (size_t i = 0; i < kMaxPrivateExceptions; ++i) {
    p.private_exceptions.push_back(
        *Cidr::Parse("10." + std::to_string(i) + ".0.0/17"));  // unaligned: mask expressions
  }
  AllowRule ports{*Cidr::Parse("203.0.113.0/24"), Protocol::kAny, {}};
  for (size_t i = 0; i < kMaxPortRangesPerRule; ++i) {
    const auto first = static_cast<uint16_t>(1000 + 3 * i);
    ports.ports.push_back({first, static_cast<uint16_t>(first + 1)});
  }
  p.allow = {ports};
  return p;
}

TEST(Bounds, PolicyAtTheCapsValidatesAndEncodes) {
  const TapPolicy p = Largest();
  ASSERT_TRUE(Validate(p).ok()) << Validate(p);
  Batch b(1);
  const TapRuleset rs = BuildTapRuleset(p);
  for (const ChainSpec* c : {&rs.egress, &rs.egress6, &rs.inbound, &rs.input}) {
    for (const Rule& r : c->rules) encode::NewRule(b, rs.names.table, c->name, r, "rule");
  }
  encode::NewAddressSet(b, kTable, kMetadataSet6, Family::kV6, MetadataSetRanges(Family::kV6));
  EXPECT_GT(b.message_count(), 10u);
  EXPECT_GT(b.Finish().size(), 0u);
}

TEST(Bounds, ThousandsOfIpv6PinsAreSplitOverMessages) {
  std::vector<encode::PinElement> pins;
  for (size_t i = 0; i < kMaxPinsPerCall; ++i) {
    IpAddress a = *IpAddress::Parse("2001:db8::");
    a.bytes[14] = static_cast<uint8_t>(i >> 8);
    a.bytes[15] = static_cast<uint8_t>(i);
    pins.push_back({a, 443, 60000});
  }
  Batch b(1);
  encode::NewPinElements(b, kTable, "tap_sbt0_pin6", Family::kV6, pins);
  // 64 elements per message.
  EXPECT_EQ(b.message_count(), kMaxPinsPerCall / 64);
  const std::string* last = b.Describe(1 + b.message_count());
  ASSERT_NE(last, nullptr);
  EXPECT_NE(last->find("part 32"), std::string::npos) << *last;
}

TEST(Bounds, ValidateRefusesMoreThanTheCaps) {
  TapPolicy p = Largest();
  p.private_exceptions.push_back(*Cidr::Parse("10.200.0.0/16"));
  EXPECT_NE(std::string(Validate(p).message()).find("private exceptions, at most 32"),
            std::string::npos)
      << Validate(p);
  p = Largest();
  p.allow[0].ports.push_back({60000, 60000});
  EXPECT_NE(std::string(Validate(p).message()).find("port ranges, at most 256"), std::string::npos)
      << Validate(p);
  p = Largest();
  for (int i = 0; i < 1030; ++i) {
    p.allow.push_back({*Cidr::Parse("198.51.100." + std::to_string(i % 250) + "/32"),
                       Protocol::kTcp,
                       {{static_cast<uint16_t>(1 + i), static_cast<uint16_t>(1 + i)}}});
  }
  EXPECT_NE(std::string(Validate(p).message()).find("allow rules, at most 1024"), std::string::npos)
      << Validate(p);
}

}  // namespace
}  // namespace forkd::netfilter
