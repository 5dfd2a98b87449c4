#include "netfilter/ruleset.h"

#include <netinet/in.h>

#include <algorithm>
#include <set>

#include "gtest/gtest.h"
#include "netfilter/nft_text.h"

namespace forkd::netfilter {
namespace {

TapPolicy Base() {
  TapPolicy p;
  p.tap = "sbt0";
  p.guest_v4 = *IpAddress::Parse("10.200.0.2");
  p.resolvers = {*IpAddress::Parse("169.254.1.1")};
  return p;
}

bool IsUnconditional(const Rule& r) {
  return !r.saddr && r.saddr_not.empty() && !r.daddr && r.daddr_not.empty() && !r.daddr_set &&
         !r.ip_options && !r.routing_header && !r.l4proto && r.dports.empty() && !r.icmpv6_type &&
         !r.ct_established_related && !r.only_family && !r.pin_set && !r.oifname &&
         !r.iifname_prefix && !r.oifname_prefix;
}

std::vector<std::string> Render(const ChainSpec& c) {
  std::vector<std::string> out;
  for (const Rule& r : c.rules) out.push_back(RenderRule(r));
  return out;
}

TEST(Ruleset, AntiSpoofComesFirstAndCoversBothFamilies) {
  const TapRuleset rs = BuildTapRuleset(Base());
  ASSERT_GE(rs.egress.rules.size(), 2u);
  const Rule& v4 = rs.egress.rules[0];
  EXPECT_TRUE(v4.saddr_negate);
  EXPECT_EQ(v4.saddr->ToString(), "10.200.0.2/32");
  EXPECT_EQ(v4.verdict, Verdict::kDrop);
  // No IPv6 address: every IPv6 packet from the tap is a spoof.
  const Rule& v6 = rs.egress.rules[1];
  EXPECT_EQ(v6.only_family, Family::kV6);
  EXPECT_EQ(v6.verdict, Verdict::kDrop);

  TapPolicy p = Base();
  p.guest_v6 = *IpAddress::Parse("fd42::2");
  const TapRuleset rs6 = BuildTapRuleset(p);
  EXPECT_EQ(RenderRule(rs6.egress.rules[1]).substr(0, 32), "ip6 saddr != fd42::2 counter nam");
}

TEST(Ruleset, EgressSplitsByFamilyAfterAntiSpoof) {
  TapPolicy p = Base();
  p.guest_v6 = *IpAddress::Parse("fd42::2");
  p.allow = {{*Cidr::Parse("203.0.113.0/24"), Protocol::kAny, {}},
             {*Cidr::Parse("2001:db8::/32"), Protocol::kAny, {}}};
  const TapRuleset rs = BuildTapRuleset(p);
  // Anti-spoof (both families) and the counter come before the split, and
  // check the family themselves.
  for (int i = 0; i < 2; ++i) EXPECT_FALSE(rs.egress.rules[i].family_known);
  const Rule& split = rs.egress.rules[3];
  EXPECT_EQ(split.verdict, Verdict::kGoto);
  EXPECT_EQ(split.target, "tap_sbt0_egress6");
  EXPECT_EQ(split.only_family, Family::kV6);
  for (size_t i = 4; i < rs.egress.rules.size(); ++i) {
    const Rule& r = rs.egress.rules[i];
    EXPECT_TRUE(r.family_known) << RenderRule(r);
    EXPECT_NE(r.family(), Family::kV6) << RenderRule(r);
  }
  for (const Rule& r : rs.egress6.rules) {
    EXPECT_TRUE(r.family_known) << RenderRule(r);
    EXPECT_NE(r.family(), Family::kV4) << RenderRule(r);
  }
  EXPECT_TRUE(IsUnconditional(rs.egress6.rules.back()));
  EXPECT_EQ(rs.egress6.rules.back().verdict, Verdict::kDrop);
  // Without IPv6 there is no split: the anti-spoof rule drops all IPv6.
  const TapRuleset v4only = BuildTapRuleset(Base());
  EXPECT_TRUE(v4only.egress6.rules.empty());
  for (const Rule& r : v4only.egress.rules) EXPECT_NE(r.verdict, Verdict::kGoto);
}

TEST(Ruleset, TerminalVerdictIsUnconditional) {
  TapPolicy p = Base();
  // Keep the ruleset alive: a reference into a temporary dangles (ASan).
  const TapRuleset deny_rs = BuildTapRuleset(p);
  const Rule& deny = deny_rs.egress.rules.back();
  EXPECT_TRUE(IsUnconditional(deny));
  EXPECT_EQ(deny.verdict, Verdict::kDrop);
  p.mode = EgressMode::kAllowAll;
  const TapRuleset allow_rs = BuildTapRuleset(p);
  const Rule& allow = allow_rs.egress.rules.back();
  EXPECT_TRUE(IsUnconditional(allow));
  EXPECT_EQ(allow.verdict, Verdict::kAccept);
}

TEST(Ruleset, NoAcceptBeforeAntiSpoofAndMetadataExceptResolver) {
  TapPolicy p = Base();
  p.allow = {{*Cidr::Parse("0.0.0.0/0"), Protocol::kAny, {}}};
  const auto rules = BuildTapRuleset(p).egress.rules;
  size_t metadata = 0;
  for (size_t i = 0; i < rules.size(); ++i) {
    if (rules[i].daddr_set == kMetadataSet4) metadata = i;
  }
  ASSERT_GT(metadata, 2u);
  for (size_t i = 0; i < metadata; ++i) {
    if (rules[i].verdict != Verdict::kAccept) continue;
    EXPECT_EQ(rules[i].dports.at(0).first, 53) << RenderRule(rules[i]);
    EXPECT_EQ(rules[i].daddr->ToString(), "169.254.1.1/32");
  }
}

TEST(Ruleset, PrivateRangesBlockedBeforeAllowRulesEvenInAllowAll) {
  TapPolicy p = Base();
  p.mode = EgressMode::kAllowAll;
  p.allow = {{*Cidr::Parse("0.0.0.0/0"), Protocol::kAny, {}}};
  const auto rendered = Render(BuildTapRuleset(p).egress);
  auto index_of = [&](const std::string& needle) {
    for (size_t i = 0; i < rendered.size(); ++i) {
      if (rendered[i].find(needle) != std::string::npos) return i;
    }
    ADD_FAILURE() << "no rule contains " << needle;
    return rendered.size();
  };
  const size_t allow = index_of("ip daddr 0.0.0.0/0 accept");
  EXPECT_LT(index_of("ip daddr @private4 drop"), allow);
  // The set holds every private IPv4 range.
  const std::vector<Cidr> set = PrivateSetRanges(Family::kV4);
  for (const char* range : {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"}) {
    EXPECT_NE(std::find(set.begin(), set.end(), *Cidr::Parse(range)), set.end()) << range;
  }
  // Without IPv6 on the guest there is no point in an IPv6 range rule.
  for (const auto& r : rendered) EXPECT_EQ(r.find("@private6"), std::string::npos) << r;
}

TEST(Ruleset, PrivateExceptionsCarveOutOrRemoveTheBlock) {
  TapPolicy p = Base();
  p.private_exceptions = {*Cidr::Parse("10.1.0.0/16"), *Cidr::Parse("192.168.0.0/16")};
  const auto rendered = Render(BuildTapRuleset(p).egress);
  bool carved = false;
  for (const auto& r : rendered) {
    if (r.rfind("ip daddr @private4 ip daddr != 10.1.0.0/16 ip daddr != 192.168.0.0/16 drop", 0) ==
        0) {
      carved = true;
    }
  }
  EXPECT_TRUE(carved);
}

TEST(Ruleset, AllowRuleWithoutPortsAllowsEveryPortAndProtocol) {
  TapPolicy p = Base();
  p.allow = {{*Cidr::Parse("198.51.100.7"), Protocol::kAny, {}}};
  int matching = 0;
  for (const Rule& r : BuildTapRuleset(p).egress.rules) {
    if (r.daddr && r.daddr->ToString() == "198.51.100.7/32") {
      ++matching;
      EXPECT_FALSE(r.l4proto);
      EXPECT_TRUE(r.dports.empty());
      EXPECT_EQ(r.verdict, Verdict::kAccept);
    }
  }
  EXPECT_EQ(matching, 1);
}

TEST(Ruleset, AllowRuleWithPortsAllowsOnlyThosePorts) {
  TapPolicy p = Base();
  p.allow = {
      {*Cidr::Parse("203.0.113.0/24"), Protocol::kAny, {{8000, 8080}, {443, 443}, {8081, 8090}}}};
  const TapRuleset rs = BuildTapRuleset(p);
  // Sorted, adjacent ranges merged, one element per protocol and range, in
  // the tap's allow set; one rule looks it up.
  ASSERT_EQ(rs.allow_sets.size(), 2u);
  const auto& set = rs.allow_sets[0];
  EXPECT_EQ(set.name, "tap_sbt0_allow4");
  ASSERT_EQ(set.elements.size(), 4u);
  std::set<std::string> got;
  for (const AllowElement& e : set.elements) {
    got.insert(std::to_string(e.l4proto) + " " + e.destination.ToString() + " " +
               ToString(e.ports));
  }
  EXPECT_EQ(got, (std::set<std::string>{"6 203.0.113.0/24 443", "6 203.0.113.0/24 8000-8090",
                                        "17 203.0.113.0/24 443", "17 203.0.113.0/24 8000-8090"}));
  EXPECT_TRUE(rs.allow_sets[1].elements.empty());
  size_t lookups = 0;
  for (const Rule& r : rs.egress.rules) {
    if (r.allow_set) {
      ++lookups;
      EXPECT_EQ(RenderRule(r).substr(0, 54),
                "meta l4proto . ip daddr . th dport @tap_sbt0_allow4 ac");
    }
  }
  EXPECT_EQ(lookups, 1u);
}

TEST(Ruleset, OverlappingPortedRulesFallBackToOneRuleEach) {
  TapPolicy p = Base();
  p.allow = {{*Cidr::Parse("203.0.113.0/24"), Protocol::kTcp, {{443, 443}}},
             {*Cidr::Parse("203.0.113.7/32"), Protocol::kTcp, {{400, 500}}}};
  const TapRuleset rs = BuildTapRuleset(p);
  EXPECT_TRUE(rs.allow_sets[0].elements.empty());
  std::vector<std::string> got;
  for (const Rule& r : rs.egress.rules) {
    if (r.comment.rfind("allow 203", 0) == 0) got.push_back(RenderRule(r).substr(0, 60));
  }
  EXPECT_EQ(got.size(), 2u);
}

TEST(Ruleset, InputChainAllowsOnlyTheResolverThenDrops) {
  const ChainSpec input = BuildTapRuleset(Base()).input;
  ASSERT_EQ(input.rules.size(), 4u);
  // Header hygiene first: a source-routed packet to the resolver is refused.
  EXPECT_EQ(RenderRule(input.rules[0]),
            "ip hdrlength != 5 drop comment \"IPv4 options (source routing)\"");
  for (int i = 1; i < 3; ++i) {
    EXPECT_EQ(input.rules[i].saddr->ToString(), "10.200.0.2/32");
    EXPECT_EQ(input.rules[i].daddr->ToString(), "169.254.1.1/32");
    EXPECT_EQ(input.rules[i].dports.at(0).first, 53);
    EXPECT_EQ(input.rules[i].verdict, Verdict::kAccept);
  }
  EXPECT_TRUE(IsUnconditional(input.rules[3]));
  EXPECT_EQ(input.rules[3].verdict, Verdict::kDrop);

  TapPolicy none = Base();
  none.resolvers.clear();
  const ChainSpec closed = BuildTapRuleset(none).input;
  ASSERT_EQ(closed.rules.size(), 2u);
  EXPECT_EQ(closed.rules[1].verdict, Verdict::kDrop);
}

TEST(Ruleset, InboundReturnsOnlyRepliesFromWhatThePolicyStillAllows) {
  TapPolicy p = Base();
  p.allow = {{*Cidr::Parse("203.0.113.0/24"), Protocol::kTcp, {{443, 443}}}};
  const ChainSpec inbound = BuildTapRuleset(p).inbound;
  const auto rendered = Render(inbound);
  ASSERT_GE(rendered.size(), 4u);
  EXPECT_EQ(rendered[0].substr(0, 36), "ct state invalid,new,untracked drop ");
  EXPECT_EQ(rendered[1].substr(0, 24), "meta nfproto ipv6 drop c");
  auto has = [&](const std::string& text) {
    return std::any_of(rendered.begin(), rendered.end(),
                       [&](const std::string& r) { return r.rfind(text, 0) == 0; });
  };
  EXPECT_TRUE(has("meta l4proto icmp ct state related return"));
  EXPECT_TRUE(has("ip saddr 169.254.1.1 meta l4proto udp th sport 53 return"));
  EXPECT_TRUE(has("ip saddr @cloud_metadata4 drop"));
  EXPECT_TRUE(has("ip saddr @private4 drop"));
  EXPECT_TRUE(has("meta l4proto . ip saddr . th sport @tap_sbt0_allow4 return"));
  EXPECT_TRUE(has("meta l4proto tcp ip saddr . th sport @tap_sbt0_pin4 return"));
  EXPECT_TRUE(IsUnconditional(inbound.rules.back()));
  EXPECT_EQ(inbound.rules.back().verdict, Verdict::kDrop);
  for (const Rule& r : inbound.rules) EXPECT_NE(r.verdict, Verdict::kAccept) << RenderRule(r);
  p.mode = EgressMode::kAllowAll;
  EXPECT_EQ(BuildTapRuleset(p).inbound.rules.back().verdict, Verdict::kReturn);
}

TEST(Ruleset, PinRulesReferenceTheTapsSets) {
  TapPolicy p = Base();
  p.guest_v6 = *IpAddress::Parse("fd42::2");
  const TapRuleset rs = BuildTapRuleset(p);
  auto count = [](const ChainSpec& c, const std::string& set) {
    int n = 0;
    for (const Rule& r : c.rules) {
      if (!r.pin_set || *r.pin_set != set) continue;
      EXPECT_TRUE(r.l4proto == IPPROTO_TCP || r.l4proto == IPPROTO_UDP);
      ++n;
    }
    return n;
  };
  EXPECT_EQ(count(rs.egress, "tap_sbt0_pin4"), 2);
  EXPECT_EQ(count(rs.egress, "tap_sbt0_pin6"), 0);
  EXPECT_EQ(count(rs.egress6, "tap_sbt0_pin6"), 2);
  EXPECT_EQ(count(rs.egress6, "tap_sbt0_pin4"), 0);
  ASSERT_EQ(rs.pin_sets.size(), 2u);
  EXPECT_EQ(rs.pin_sets[0].max_elements, 4096u);
}

TEST(Names, DerivedFromTapAndRecoverable) {
  const TapObjectNames n = NamesFor("sbt0");
  EXPECT_EQ(n.egress_chain, "tap_sbt0_egress");
  EXPECT_EQ(TapFromEgressChain(n.egress_chain), "sbt0");
  EXPECT_EQ(TapFromEgressChain("tap_x_egress_egress"), "x_egress");
  EXPECT_FALSE(TapFromEgressChain("forward"));
  EXPECT_FALSE(TapFromEgressChain("tap__egress"));
  EXPECT_FALSE(TapFromEgressChain("tap_sbt0_input"));
}

TEST(Shards, StableSpreadAndNaming) {
  EXPECT_EQ(ShardTable("sbt0", 1), "forkd");
  EXPECT_EQ(ShardTable("sbt0", 32), ShardTable("sbt0", 32));
  std::set<std::string> used;
  for (int i = 0; i < 1000; ++i) used.insert(ShardTable("s" + std::to_string(i), 32));
  EXPECT_EQ(used.size(), 32u);  // 1000 taps reach every shard
  EXPECT_TRUE(IsForkdFilterTable("forkd"));
  EXPECT_TRUE(IsForkdFilterTable(ShardTableName(7, 32)));
  EXPECT_FALSE(IsForkdFilterTable("forkd_nat"));
  EXPECT_FALSE(IsForkdFilterTable("filter"));
  EXPECT_EQ(BuildTapRuleset(Base(), "forkd_s3").names.table, "forkd_s3");
  EXPECT_FALSE(Validate(SkeletonConfig{.shards = 0}).ok());
  EXPECT_FALSE(Validate(SkeletonConfig{.shards = 257}).ok());
}

TEST(Skeleton, ValidatesUplinkAndSubnets) {
  EXPECT_TRUE(Validate(SkeletonConfig{}).ok());
  EXPECT_FALSE(Validate(SkeletonConfig{.uplink = "eth0", .guest_subnets = {}}).ok());
  EXPECT_FALSE(
      Validate(SkeletonConfig{.uplink = "bad name", .guest_subnets = {*Cidr::Parse("10.0.0.0/8")}})
          .ok());
  EXPECT_FALSE(Validate(SkeletonConfig{.uplink = std::nullopt,
                                       .guest_subnets = {*Cidr::Parse("10.0.0.0/8")}})
                   .ok());
  const auto rules =
      BuildMasqueradeRules({.uplink = "eth0", .guest_subnets = {*Cidr::Parse("10.200.0.0/16")}});
  ASSERT_EQ(rules.size(), 1u);
  EXPECT_EQ(RenderRule(rules[0]),
            "ip saddr 10.200.0.0/16 oifname \"eth0\" masquerade comment \"sandbox subnet out of "
            "the uplink\"");
}

}  // namespace
}  // namespace forkd::netfilter

namespace forkd::netfilter {
namespace {

TapPolicy Dual() {
  TapPolicy p = Base();
  p.guest_v6 = *IpAddress::Parse("fd42::2");
  return p;
}

TEST(Ruleset, EgressIsStatelessSoRevocationCutsLiveFlows) {
  const TapRuleset rs = BuildTapRuleset(Dual());
  for (const ChainSpec* c : {&rs.egress, &rs.egress6}) {
    for (const Rule& r : c->rules) EXPECT_FALSE(r.ct_established_related) << RenderRule(r);
  }
}

TEST(Ruleset, HeaderHygieneBeforeAnyAcceptInEachFamily) {
  TapPolicy p = Dual();
  p.mode = EgressMode::kAllowAll;
  p.resolvers.push_back(*IpAddress::Parse("fd42::1"));
  const TapRuleset rs = BuildTapRuleset(p);
  auto first_accept = [](const ChainSpec& c) {
    for (size_t i = 0; i < c.rules.size(); ++i) {
      if (c.rules[i].verdict == Verdict::kAccept) return i;
    }
    return c.rules.size();
  };
  auto index_of = [](const ChainSpec& c, const std::string& needle) {
    for (size_t i = 0; i < c.rules.size(); ++i) {
      if (RenderRule(c.rules[i]).find(needle) != std::string::npos) return i;
    }
    return c.rules.size();
  };
  const size_t v4 = index_of(rs.egress, "ip hdrlength != 5 drop");
  ASSERT_LT(v4, rs.egress.rules.size());
  EXPECT_LT(v4, first_accept(rs.egress));
  const size_t v6 = index_of(rs.egress6, "exthdr rt exists drop");
  ASSERT_LT(v6, rs.egress6.rules.size());
  EXPECT_LT(v6, first_accept(rs.egress6));
  // In the input chain too (the encoder checks the family there: both share it).
  EXPECT_LT(index_of(rs.input, "ip hdrlength != 5 drop"), first_accept(rs.input));
  EXPECT_LT(index_of(rs.input, "exthdr rt exists drop"), first_accept(rs.input));
}

TEST(Ruleset, MetadataSetLookupComesBeforeAllowRulesAndPinsInBothFamilies) {
  TapPolicy p = Dual();
  p.mode = EgressMode::kAllowAll;
  p.allow = {{*Cidr::Parse("0.0.0.0/0"), Protocol::kAny, {}},
             {*Cidr::Parse("::/0"), Protocol::kAny, {}}};
  p.private_exceptions = {*Cidr::Parse("100.64.0.0/10"), *Cidr::Parse("fc00::/7")};
  const TapRuleset rs = BuildTapRuleset(p);
  for (const auto& [chain, text] : {std::pair{&rs.egress, "ip daddr @cloud_metadata4 drop"},
                                    std::pair{&rs.egress6, "ip6 daddr @cloud_metadata6 drop"}}) {
    size_t metadata = chain->rules.size();
    for (size_t i = 0; i < chain->rules.size(); ++i) {
      const std::string r = RenderRule(chain->rules[i]);
      if (r.find(text) != std::string::npos) metadata = i;
      if (chain->rules[i].verdict == Verdict::kAccept && metadata == chain->rules.size()) {
        EXPECT_EQ(chain->rules[i].dports.at(0).first, 53) << r;  // only the resolver
      }
    }
    EXPECT_LT(metadata, chain->rules.size()) << text;
  }
}

TEST(Ruleset, NeighbourDiscoveryOnlyFromTheGuestsOwnAddresses) {
  const ChainSpec input = BuildTapRuleset(Dual()).input;
  size_t foreign = input.rules.size();
  for (size_t i = 0; i < input.rules.size(); ++i) {
    const std::string r = RenderRule(input.rules[i]);
    if (r.find("ip6 saddr != fd42::2 ip6 saddr != fe80::/64 ip6 saddr != :: drop") == 0) {
      foreign = i;
    }
    if (input.rules[i].icmpv6_type) {
      EXPECT_GT(i, foreign) << r;
    }
  }
  EXPECT_LT(foreign, input.rules.size());
}

TEST(Ruleset, FailClosedRulesMatchTheTapPrefix) {
  SkeletonConfig config;
  const auto forward = BuildForwardFailClosedRules(config);
  ASSERT_EQ(forward.size(), 2u);
  EXPECT_EQ(RenderRule(forward[0]).substr(0, 50),
            "iifname \"sbt*\" iifname != @installed_taps drop com");
  EXPECT_EQ(RenderRule(forward[1]).substr(0, 50),
            "oifname \"sbt*\" oifname != @installed_taps drop com");
  const auto input = BuildInputFailClosedRules(config);
  ASSERT_EQ(input.size(), 1u);
  EXPECT_TRUE(input[0].iifname_prefix);
  config.tap_prefix = "fk-";
  EXPECT_EQ(*BuildForwardFailClosedRules(config)[0].iifname_prefix, "fk-");
  config.tap_prefix = "bad/prefix";
  EXPECT_FALSE(Validate(config).ok());
}

TEST(Ruleset, MetadataSetRangesAreSortedAndDisjoint) {
  for (Family f : {Family::kV4, Family::kV6}) {
    const std::vector<Cidr> ranges = MetadataSetRanges(f);
    ASSERT_FALSE(ranges.empty());
    for (size_t i = 1; i < ranges.size(); ++i) {
      EXPECT_LT(ranges[i - 1].address.bytes, ranges[i].address.bytes);
      EXPECT_FALSE(ranges[i - 1].Overlaps(ranges[i]));
    }
  }
}

TEST(Ruleset, LongAllowRulesGetShortComments) {
  TapPolicy p = Base();
  AllowRule r{*Cidr::Parse("203.0.113.0/24"), Protocol::kTcp, {}};
  for (uint16_t port = 1000; port < 1200; port += 2) r.ports.push_back({port, port});
  p.allow = {r};
  for (const Rule& rule : BuildTapRuleset(p).egress.rules) EXPECT_LE(rule.comment.size(), 120u);
}

}  // namespace
}  // namespace forkd::netfilter

namespace forkd::netfilter {
namespace {

TEST(Ruleset, NeighbourDiscoveryIsOneSharedChainJumpedAfterTheForeignSourceCheck) {
  const ChainSpec input = BuildTapRuleset(Dual()).input;
  size_t foreign = input.rules.size();
  size_t jump = input.rules.size();
  for (size_t i = 0; i < input.rules.size(); ++i) {
    const Rule& r = input.rules[i];
    if (!r.saddr_not.empty() && r.verdict == Verdict::kDrop) foreign = i;
    if (r.verdict == Verdict::kJump) {
      EXPECT_EQ(r.target, kNeighbourDiscoveryChain);
      EXPECT_EQ(r.only_family, Family::kV6);
      jump = i;
    }
    // No accept of ICMPv6 in the tap's own chain: only the shared one has it.
    EXPECT_FALSE(r.icmpv6_type) << RenderRule(r);
  }
  ASSERT_LT(foreign, input.rules.size());
  ASSERT_LT(jump, input.rules.size());
  EXPECT_LT(foreign, jump);
  // The jump returns whatever the shared chain does not accept: the tap's own
  // drop follows.
  EXPECT_EQ(jump + 1, input.rules.size() - 1);
  EXPECT_TRUE(IsUnconditional(input.rules.back()));
  EXPECT_EQ(input.rules.back().verdict, Verdict::kDrop);
  // Without IPv6 no jump.
  for (const Rule& r : BuildTapRuleset(Base()).input.rules) EXPECT_NE(r.verdict, Verdict::kJump);

  // The shared chain accepts exactly router solicitation and neighbour
  // solicitation/advertisement, IPv6 only, and nothing else.
  std::vector<std::string> shared;
  for (const Rule& r : BuildNeighbourDiscoveryRules()) shared.push_back(RenderRule(r));
  EXPECT_EQ(shared, (std::vector<std::string>{
                        "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 133 accept comment "
                        "\"IPv6 neighbour discovery\"",
                        "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 135 accept comment "
                        "\"IPv6 neighbour discovery\"",
                        "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 136 accept comment "
                        "\"IPv6 neighbour discovery\""}));
}

TEST(Ruleset, EgressAndInboundShareOneComputationOfTheAllowSet) {
  // Both directions look up the same set, and the set holds each element once.
  TapPolicy p = Base();
  p.allow = {{*Cidr::Parse("203.0.113.0/24"), Protocol::kTcp, {{443, 443}, {80, 80}}}};
  const TapRuleset rs = BuildTapRuleset(p);
  EXPECT_EQ(rs.allow_sets[0].elements.size(), 2u);
  size_t egress = 0;
  size_t inbound = 0;
  for (const Rule& r : rs.egress.rules) egress += r.allow_set == "tap_sbt0_allow4" ? 1 : 0;
  for (const Rule& r : rs.inbound.rules) inbound += r.allow_set == "tap_sbt0_allow4" ? 1 : 0;
  EXPECT_EQ(egress, 1u);
  EXPECT_EQ(inbound, 1u);
}

}  // namespace
}  // namespace forkd::netfilter
