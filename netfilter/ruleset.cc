#include "netfilter/ruleset.h"

#include <netinet/in.h>

#include <algorithm>

#include "common/errno_status.h"
#include "netfilter/metadata.h"

namespace forkd::netfilter {
namespace {

constexpr uint16_t kDnsPort = 53;
// ICMPv6 neighbour discovery the guest needs to find its gateway on the tap.
constexpr uint8_t kNdRouterSolicit = 133;
constexpr uint8_t kNdNeighborSolicit = 135;
constexpr uint8_t kNdNeighborAdvert = 136;

// nft refuses comments longer than this; long allow rules are cut.
constexpr size_t kMaxComment = 120;

std::string Comment(std::string text) {
  if (text.size() > kMaxComment) text = text.substr(0, kMaxComment - 3) + "...";
  return text;
}

std::vector<uint8_t> ProtocolsOf(Protocol p) {
  switch (p) {
    case Protocol::kTcp:
      return {IPPROTO_TCP};
    case Protocol::kUdp:
      return {IPPROTO_UDP};
    case Protocol::kAny:
      break;
  }
  return {IPPROTO_TCP, IPPROTO_UDP};
}

void AddAntiSpoof(const TapPolicy& p, const TapObjectNames& n, std::vector<Rule>& rules) {
  Rule v4;
  v4.saddr = Cidr::Host(p.guest_v4);
  v4.saddr_negate = true;
  v4.counter = n.spoof_counter;
  v4.verdict = Verdict::kDrop;
  v4.comment = "anti-spoof: IPv4 source other than the guest's";
  rules.push_back(v4);
  Rule v6;
  if (p.guest_v6) {
    v6.saddr = Cidr::Host(*p.guest_v6);
    v6.saddr_negate = true;
    v6.comment = "anti-spoof: IPv6 source other than the guest's";
  } else {
    v6.only_family = Family::kV6;
    v6.comment = "anti-spoof: the guest has no IPv6 address";
  }
  v6.counter = n.spoof_counter;
  v6.verdict = Verdict::kDrop;
  rules.push_back(v6);
}

void AddResolverRules(const TapPolicy& p, bool with_source, std::vector<Rule>& rules) {
  for (const IpAddress& r : p.resolvers) {
    for (uint8_t proto : {IPPROTO_UDP, IPPROTO_TCP}) {
      Rule rule;
      if (with_source) {
        rule.saddr = Cidr::Host(r.family == Family::kV4 ? p.guest_v4 : *p.guest_v6);
      }
      rule.daddr = Cidr::Host(r);
      rule.l4proto = proto;
      rule.dports = {PortRange{kDnsPort, kDnsPort}};
      rule.verdict = Verdict::kAccept;
      rule.comment = "resolver";
      rules.push_back(rule);
    }
  }
}

// One rule per family: the private ranges (a set of the skeleton) minus the
// policy's exceptions of that family.
void AddPrivateBlocks(const TapPolicy& p, std::vector<Rule>& rules) {
  for (Family f : {Family::kV4, Family::kV6}) {
    if (f == Family::kV6 && !p.guest_v6) continue;
    Rule rule;
    rule.daddr_set = f == Family::kV4 ? kPrivateSet4 : kPrivateSet6;
    rule.set_family = f;
    std::string excepted;
    for (const Cidr& e : p.private_exceptions) {
      if (e.family() != f) continue;
      rule.daddr_not.push_back(e);
      excepted += " " + e.ToString();
    }
    rule.verdict = Verdict::kDrop;
    rule.comment = Comment("private ranges" + (excepted.empty() ? "" : " except" + excepted));
    rules.push_back(rule);
  }
}

std::vector<PortRange> Merged(std::vector<PortRange> ports) {
  std::sort(ports.begin(), ports.end(),
            [](const PortRange& x, const PortRange& y) { return x.first < y.first; });
  std::vector<PortRange> merged;
  for (const PortRange& r : ports) {
    if (!merged.empty() && merged.back().last + 1 >= r.first) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

// The ported allow rules as set elements, or nothing when two of them
// overlap (same protocol, overlapping destinations and ports): an interval
// set refuses overlapping elements, and such a policy keeps one rule per
// allow rule instead.
std::optional<std::vector<AllowElement>> AllowElements(const TapPolicy& p) {
  std::vector<AllowElement> out;
  for (const AllowRule& a : p.allow) {
    if (a.ports.empty()) continue;
    for (uint8_t proto : ProtocolsOf(a.protocol)) {
      for (const PortRange& r : Merged(a.ports)) out.push_back({proto, a.destination, r});
    }
  }
  for (size_t i = 0; i < out.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      const AllowElement& x = out[i];
      const AllowElement& y = out[j];
      // The integer comparisons first: most pairs differ in their ports.
      if (x.l4proto == y.l4proto && x.ports.first <= y.ports.last &&
          y.ports.first <= x.ports.last && x.destination.Overlaps(y.destination)) {
        return std::nullopt;
      }
    }
  }
  return out;
}

// `elements`: AllowElements(p), computed once per ruleset.
void AddAllowRules(const TapPolicy& p, const TapObjectNames& n,
                   const std::optional<std::vector<AllowElement>>& elements,
                   std::vector<Rule>& rules) {
  for (const AllowRule& a : p.allow) {
    if (a.ports.empty()) {
      Rule rule;
      rule.daddr = a.destination;
      rule.verdict = Verdict::kAccept;
      rule.comment = Comment("allow " + ToString(a));
      rules.push_back(rule);
      continue;
    }
    if (elements) continue;  // in the allow set
    // One rule per protocol; its ports become one set lookup.
    for (uint8_t proto : ProtocolsOf(a.protocol)) {
      Rule rule;
      rule.daddr = a.destination;
      rule.l4proto = proto;
      rule.dports = Merged(a.ports);
      rule.verdict = Verdict::kAccept;
      rule.comment = Comment("allow " + ToString(a));
      rules.push_back(rule);
    }
  }
  if (!elements) return;
  for (Family f : {Family::kV4, Family::kV6}) {
    if (std::none_of(elements->begin(), elements->end(),
                     [&](const AllowElement& e) { return e.destination.family() == f; })) {
      continue;
    }
    Rule rule;
    rule.allow_set = f == Family::kV4 ? n.allow_set_v4 : n.allow_set_v6;
    rule.set_family = f;
    rule.verdict = Verdict::kAccept;
    rule.comment = "allow rules with ports (set " + *rule.allow_set + ")";
    rules.push_back(rule);
  }
}

void AddPinRules(const TapPolicy& p, const TapObjectNames& n, std::vector<Rule>& rules) {
  for (Family f : {Family::kV4, Family::kV6}) {
    if (f == Family::kV6 && !p.guest_v6) continue;
    for (uint8_t proto : {IPPROTO_TCP, IPPROTO_UDP}) {
      Rule rule;
      rule.l4proto = proto;
      rule.pin_set = f == Family::kV4 ? n.pin_set_v4 : n.pin_set_v6;
      rule.pin_family = f;
      rule.verdict = Verdict::kAccept;
      rule.comment = "DNS-pinned destination";
      rules.push_back(rule);
    }
  }
}

// Header hygiene: source routing would let the kernel (here or one hop on)
// send a packet somewhere other than the destination these chains judged.
// IPv4: every option is refused, not only LSRR/SSRR (a guest needs none; the
// options that matter on a LAN, router alert for IGMP, are not forwarded and
// the input chain refuses IGMP anyway, and refusing all of them leaves no
// parsing subtleties). IPv6: every routing header, types 0, 1 (Nimrod), 3
// (RPL), 4 (segment routing) and also 2 (Mobile IPv6, which a guest has no
// home agent for).
void AddHeaderHygiene(bool with_v6, std::vector<Rule>& rules) {
  Rule v4;
  v4.ip_options = true;
  v4.verdict = Verdict::kDrop;
  v4.comment = "IPv4 options (source routing)";
  rules.push_back(v4);
  if (!with_v6) return;
  Rule v6;
  v6.routing_header = true;
  v6.verdict = Verdict::kDrop;
  v6.comment = "IPv6 routing header (source routing)";
  rules.push_back(v6);
}

// The policy itself, for both families, in evaluation order. Stateless on
// purpose: there is no `ct state established accept`, so every packet of a
// flow is judged against the policy in force; a ReplaceTap that removes a
// rule, or a pin that expires, stops the flow's next packet.
std::vector<Rule> BuildPolicyBody(const TapPolicy& p, const TapObjectNames& n,
                                  const std::optional<std::vector<AllowElement>>& elements) {
  std::vector<Rule> rules;
  AddHeaderHygiene(p.guest_v6.has_value(), rules);
  // The resolver comes before the metadata block so an operator-chosen
  // link-local resolver (AWS's 169.254.169.253) is reachable off-box too;
  // Validate() refuses the metadata service addresses themselves as resolvers.
  AddResolverRules(p, /*with_source=*/false, rules);

  for (Family f : {Family::kV4, Family::kV6}) {
    if (f == Family::kV6 && !p.guest_v6) continue;
    Rule metadata;
    metadata.daddr_set = f == Family::kV4 ? kMetadataSet4 : kMetadataSet6;
    metadata.set_family = f;
    metadata.verdict = Verdict::kDrop;
    metadata.comment = "cloud metadata (netfilter/metadata.h)";
    rules.push_back(metadata);
  }

  AddPrivateBlocks(p, rules);
  AddAllowRules(p, n, elements, rules);
  AddPinRules(p, n, rules);

  Rule terminal;
  terminal.verdict = p.mode == EgressMode::kAllowAll ? Verdict::kAccept : Verdict::kDrop;
  terminal.comment = p.mode == EgressMode::kAllowAll ? "allow-all mode" : "default deny";
  rules.push_back(terminal);
  return rules;
}

// The rules of `body` that apply to `family`, marked so the encoder skips
// the per-rule family check: only packets of that family reach them.
std::vector<Rule> ForFamily(const std::vector<Rule>& body, Family family) {
  std::vector<Rule> out;
  out.reserve(body.size());
  for (const Rule& r : body) {
    if (r.family() && *r.family() != family) continue;
    out.push_back(r);
    out.back().family_known = true;
  }
  return out;
}

// Egress is split by family right after the anti-spoof rules: IPv6 goes to
// its own chain, so every later rule of either chain sees one family only and
// needs no `meta nfproto` check (a fifth of an install's expressions).
void BuildEgress(const TapPolicy& p, const TapObjectNames& n, const std::vector<Rule>& body,
                 ChainSpec& v4, ChainSpec& v6) {
  v4 = ChainSpec{n.egress_chain, {}};
  v6 = ChainSpec{n.egress6_chain, {}};
  AddAntiSpoof(p, n, v4.rules);

  Rule tx;
  tx.counter = n.tx_counter;
  tx.comment = "egress from the guest's own address";
  v4.rules.push_back(tx);

  if (p.guest_v6) {
    Rule to_v6;
    to_v6.only_family = Family::kV6;
    to_v6.verdict = Verdict::kGoto;
    to_v6.target = n.egress6_chain;
    to_v6.comment = "IPv6 continues in its own chain";
    v4.rules.push_back(to_v6);
    v6.rules = ForFamily(body, Family::kV6);
  }
  // Without IPv6 the anti-spoof rules dropped every IPv6 packet already.
  for (Rule& r : ForFamily(body, Family::kV4)) v4.rules.push_back(std::move(r));
}

// The reply-direction twin of an egress rule: a packet to the guest whose
// source (and source port) is what the egress rule lets the guest send to.
Rule Mirror(const Rule& r) {
  Rule m;
  m.saddr = r.daddr;
  m.saddr_not = r.daddr_not;
  m.saddr_set = r.daddr_set;
  m.set_family = r.set_family;
  m.l4proto = r.l4proto;
  m.sports = r.dports;
  m.pin_set = r.pin_set;
  m.pin_family = r.pin_family;
  m.allow_set = r.allow_set;
  m.pin_by_source = r.pin_set.has_value() || r.allow_set.has_value();
  m.family_known = r.family_known;
  m.verdict = r.verdict == Verdict::kAccept ? Verdict::kReturn : r.verdict;
  m.comment = "reply: " + r.comment;
  return m;
}

std::vector<Rule> MirrorAll(const std::vector<Rule>& rules) {
  std::vector<Rule> out;
  for (const Rule& r : rules) {
    if (r.ip_options || r.routing_header) continue;  // hygiene is the guest's side
    out.push_back(Mirror(r));
  }
  return out;
}

// Inbound: only replies, and only from a sender the policy in force still
// allows the guest to reach (the egress rules mirrored). So a ReplaceTap that
// removes a destination, or a pin that expires, cuts both directions of a
// live flow at once. ICMP errors related to a flow (path MTU) come from
// routers on the path, not the peer, and are let through by state alone.
void BuildInbound(const TapPolicy& p, const TapObjectNames& n, const std::vector<Rule>& policy,
                  ChainSpec& v4, ChainSpec& v6) {
  v4 = ChainSpec{n.inbound_chain, {}};
  v6 = ChainSpec{n.inbound6_chain, {}};
  Rule unsolicited;
  unsolicited.ct_unsolicited = true;
  unsolicited.verdict = Verdict::kDrop;
  unsolicited.comment = "unsolicited traffic to the guest";
  v4.rules.push_back(unsolicited);
  const std::vector<Rule> body = MirrorAll(policy);
  auto icmp_errors = [](uint8_t proto) {
    Rule r;
    r.ct_related = true;
    r.l4proto = proto;
    r.family_known = true;
    r.verdict = Verdict::kReturn;
    r.comment = "ICMP errors about the guest's flows";
    return r;
  };
  if (p.guest_v6) {
    Rule to_v6;
    to_v6.only_family = Family::kV6;
    to_v6.verdict = Verdict::kGoto;
    to_v6.target = n.inbound6_chain;
    to_v6.comment = "IPv6 continues in its own chain";
    v4.rules.push_back(to_v6);
    v6.rules.push_back(icmp_errors(IPPROTO_ICMPV6));
    for (Rule& r : ForFamily(body, Family::kV6)) v6.rules.push_back(std::move(r));
  } else {
    Rule no_v6;
    no_v6.only_family = Family::kV6;
    no_v6.verdict = Verdict::kDrop;
    no_v6.comment = "the guest has no IPv6 address";
    v4.rules.push_back(no_v6);
  }
  v4.rules.push_back(icmp_errors(IPPROTO_ICMP));
  for (Rule& r : ForFamily(body, Family::kV4)) v4.rules.push_back(std::move(r));
}

ChainSpec BuildInput(const TapPolicy& p, const TapObjectNames& n) {
  ChainSpec chain{n.input_chain, {}};
  AddHeaderHygiene(p.guest_v6.has_value(), chain.rules);
  AddResolverRules(p, /*with_source=*/true, chain.rules);
  if (p.guest_v6) {
    // Neighbour discovery only from the guest's own addresses: its IPv6
    // address, a link-local one (the tap is a point-to-point link that only
    // the guest is on, so every fe80::/64 source on it is the guest's), and
    // the unspecified address of duplicate address detection.
    Rule foreign;
    foreign.saddr_not = {Cidr::Host(*p.guest_v6), *Cidr::Parse("fe80::/64"),
                         *Cidr::Parse("::/128")};
    foreign.verdict = Verdict::kDrop;
    foreign.comment = "IPv6 from a source that is not the guest's";
    chain.rules.push_back(foreign);
    // The discovery messages themselves are the same for every tap: one
    // shared chain (kNeighbourDiscoveryChain) accepts them.
    Rule nd;
    nd.only_family = Family::kV6;
    nd.verdict = Verdict::kJump;
    nd.target = kNeighbourDiscoveryChain;
    nd.comment = "IPv6 neighbour discovery";
    chain.rules.push_back(nd);
  }
  Rule drop;
  drop.verdict = Verdict::kDrop;
  drop.comment = "guest to any other pod-local address";
  chain.rules.push_back(drop);
  return chain;
}

constexpr char kTapPrefix[] = "tap_";
constexpr char kEgressSuffix[] = "_egress";

}  // namespace

std::optional<Family> Rule::family() const {
  if (saddr) return saddr->family();
  if (!saddr_not.empty()) return saddr_not.front().family();
  if (daddr) return daddr->family();
  if (pin_family) return pin_family;
  if (set_family) return set_family;
  if (l4proto == IPPROTO_ICMP) return Family::kV4;
  if (l4proto == IPPROTO_ICMPV6 && !only_family) return Family::kV6;
  if (ip_options) return Family::kV4;
  if (routing_header) return Family::kV6;
  return only_family;
}

std::string ShardTableName(uint32_t index, uint32_t shards) {
  if (shards <= 1) return kTable;
  return std::string(kTable) + "_s" + std::to_string(index);
}

std::string ShardTable(const std::string& tap, uint32_t shards) {
  // FNV-1a: stable across builds and processes, unlike std::hash.
  uint32_t h = 2166136261U;
  for (unsigned char c : tap) h = (h ^ c) * 16777619U;
  return ShardTableName(shards <= 1 ? 0 : h % shards, shards);
}

bool IsForkdFilterTable(const std::string& table) {
  const std::string shard_prefix = std::string(kTable) + "_s";
  return table == kTable || table.compare(0, shard_prefix.size(), shard_prefix) == 0;
}

TapObjectNames NamesFor(const std::string& tap, const std::string& table) {
  const std::string base = kTapPrefix + tap;
  return TapObjectNames{
      .table = table,
      .egress_chain = base + kEgressSuffix,
      .egress6_chain = base + kEgressSuffix + "6",
      .inbound_chain = base + "_inbound",
      .inbound6_chain = base + "_inbound6",
      .input_chain = base + "_input",
      .pin_set_v4 = base + "_pin4",
      .pin_set_v6 = base + "_pin6",
      .allow_set_v4 = base + "_allow4",
      .allow_set_v6 = base + "_allow6",
      .tx_counter = base + "_tx",
      .spoof_counter = base + "_spoofed",
  };
}

std::optional<std::string> TapFromEgressChain(const std::string& chain) {
  const std::string prefix = kTapPrefix;
  const std::string suffix = kEgressSuffix;
  if (chain.size() <= prefix.size() + suffix.size()) return std::nullopt;
  if (chain.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  if (chain.compare(chain.size() - suffix.size(), suffix.size(), suffix) != 0) return std::nullopt;
  return chain.substr(prefix.size(), chain.size() - prefix.size() - suffix.size());
}

TapRuleset BuildTapRuleset(const TapPolicy& policy, const std::string& table) {
  TapRuleset r;
  r.tap = policy.tap;
  r.names = NamesFor(policy.tap, table);
  // Computed once: both directions share the body and the allow set.
  const std::optional<std::vector<AllowElement>> elements = AllowElements(policy);
  const std::vector<Rule> body = BuildPolicyBody(policy, r.names, elements);
  BuildEgress(policy, r.names, body, r.egress, r.egress6);
  BuildInbound(policy, r.names, body, r.inbound, r.inbound6);
  r.input = BuildInput(policy, r.names);
  // Both pin sets always exist, so a policy replacement that adds or drops
  // IPv6 never has to create or delete sets.
  r.pin_sets = {{r.names.pin_set_v4, Family::kV4, policy.pins.max_elements},
                {r.names.pin_set_v6, Family::kV6, policy.pins.max_elements}};
  r.allow_sets = {{r.names.allow_set_v4, Family::kV4, {}}, {r.names.allow_set_v6, Family::kV6, {}}};
  if (elements) {
    for (const AllowElement& e : *elements) {
      r.allow_sets[e.destination.family() == Family::kV4 ? 0 : 1].elements.push_back(e);
    }
  }
  r.counters = {r.names.tx_counter, r.names.spoof_counter};
  return r;
}

absl::Status Validate(const SkeletonConfig& config) {
  if (config.shards < 1 || config.shards > 256) {
    return absl::InvalidArgumentError("skeleton: shards must be 1..256, got " +
                                      std::to_string(config.shards));
  }
  if (!config.tap_prefix.empty()) {
    FORKD_RETURN_IF_ERROR(ValidateName("tap prefix", config.tap_prefix, kMaxTapNameLength - 1));
  }
  if (config.uplink) {
    FORKD_RETURN_IF_ERROR(ValidateName("uplink", *config.uplink, kMaxTapNameLength));
    if (config.guest_subnets.empty()) {
      return absl::InvalidArgumentError("skeleton: an uplink needs at least one guest subnet");
    }
  } else if (!config.guest_subnets.empty()) {
    return absl::InvalidArgumentError(
        "skeleton: guest subnets given but no uplink to masquerade to");
  }
  return absl::OkStatus();
}

std::vector<Rule> BuildMasqueradeRules(const SkeletonConfig& config) {
  std::vector<Rule> rules;
  if (!config.uplink) return rules;
  for (const Cidr& subnet : config.guest_subnets) {
    Rule rule;
    rule.saddr = subnet;
    rule.oifname = *config.uplink;
    rule.verdict = Verdict::kMasquerade;
    rule.comment = "sandbox subnet out of the uplink";
    rules.push_back(rule);
  }
  return rules;
}

namespace {

// `<iifname|oifname> "<prefix>*" <iifname|oifname> != @installed_taps drop`.
Rule FailClosed(const std::string& prefix, bool output) {
  Rule r;
  (output ? r.oifname_prefix : r.iifname_prefix) = prefix;
  r.ifname_not_in = kGuardSet;
  r.verdict = Verdict::kDrop;
  r.comment = std::string("fail closed: ") + (output ? "to" : "from") +
              " a forkd tap without a dispatch entry";
  return r;
}

}  // namespace

std::vector<Rule> BuildForwardFailClosedRules(const SkeletonConfig& config) {
  if (config.tap_prefix.empty()) return {};
  return {FailClosed(config.tap_prefix, /*output=*/false),
          FailClosed(config.tap_prefix, /*output=*/true)};
}

std::vector<Rule> BuildInputFailClosedRules(const SkeletonConfig& config) {
  if (config.tap_prefix.empty()) return {};
  return {FailClosed(config.tap_prefix, /*output=*/false)};
}

std::vector<Rule> BuildNeighbourDiscoveryRules() {
  std::vector<Rule> rules;
  for (uint8_t type : {kNdRouterSolicit, kNdNeighborSolicit, kNdNeighborAdvert}) {
    Rule nd;
    nd.only_family = Family::kV6;
    nd.l4proto = IPPROTO_ICMPV6;
    nd.icmpv6_type = type;
    nd.verdict = Verdict::kAccept;
    nd.comment = "IPv6 neighbour discovery";
    rules.push_back(nd);
  }
  return rules;
}

std::vector<Cidr> PrivateSetRanges(Family family) {
  std::vector<Cidr> ranges;
  for (const Cidr& c : PrivateRanges()) {
    if (c.family() == family) ranges.push_back(c);
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Cidr& a, const Cidr& b) { return a.address.bytes < b.address.bytes; });
  return ranges;
}

std::vector<SkeletonSet> SkeletonSets() {
  return {{kMetadataSet4, Family::kV4, MetadataSetRanges(Family::kV4)},
          {kMetadataSet6, Family::kV6, MetadataSetRanges(Family::kV6)},
          {kPrivateSet4, Family::kV4, PrivateSetRanges(Family::kV4)},
          {kPrivateSet6, Family::kV6, PrivateSetRanges(Family::kV6)}};
}

std::vector<Cidr> MetadataSetRanges(Family family) {
  const auto& table = family == Family::kV4 ? CloudMetadataV4() : CloudMetadataV6();
  std::vector<Cidr> ranges;
  ranges.reserve(table.size());
  for (const MetadataEntry& e : table) ranges.push_back(e.range);
  std::sort(ranges.begin(), ranges.end(), [](const Cidr& a, const Cidr& b) {
    return a.address.bytes < b.address.bytes ||
           (a.address.bytes == b.address.bytes && a.prefix < b.prefix);
  });
  // Drop ranges covered by an earlier one (an interval set refuses overlaps).
  std::vector<Cidr> out;
  for (const Cidr& c : ranges) {
    if (!out.empty() && out.back().Covers(c)) continue;
    out.push_back(c);
  }
  return out;
}

}  // namespace forkd::netfilter
