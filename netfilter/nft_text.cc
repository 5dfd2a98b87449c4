#include "netfilter/nft_text.h"

#include <netinet/in.h>

#include <algorithm>
#include <utility>

namespace forkd::netfilter {
namespace {

std::string Ip(Family f) { return f == Family::kV4 ? "ip" : "ip6"; }

std::string Prefix(const Cidr& c) {
  return c.prefix == c.address.max_prefix() ? c.address.ToString() : c.ToString();
}

std::string Proto(uint8_t p) {
  switch (p) {
    case IPPROTO_TCP:
      return "tcp";
    case IPPROTO_UDP:
      return "udp";
    case IPPROTO_ICMP:
      return "icmp";
    case IPPROTO_ICMPV6:
      return "ipv6-icmp";
    default:
      return std::to_string(p);
  }
}

std::string VerdictText(Verdict v) {
  switch (v) {
    case Verdict::kNone:
      return "";
    case Verdict::kAccept:
      return "accept";
    case Verdict::kDrop:
      return "drop";
    case Verdict::kReturn:
      return "return";
    case Verdict::kGoto:
      return "goto";
    case Verdict::kJump:
      return "jump";
    case Verdict::kMasquerade:
      return "masquerade";
  }
  return "";
}

void Append(std::string& out, const std::string& part) {
  if (part.empty()) return;
  if (!out.empty()) out += " ";
  out += part;
}

}  // namespace

std::string RenderRule(const Rule& r) {
  std::string out;
  if (r.only_family)
    Append(out, std::string("meta nfproto ") + (*r.only_family == Family::kV4 ? "ipv4" : "ipv6"));
  if (r.iifname_prefix) Append(out, "iifname \"" + *r.iifname_prefix + "*\"");
  if (r.oifname_prefix) Append(out, "oifname \"" + *r.oifname_prefix + "*\"");
  if (r.ifname_not_in) {
    Append(out, std::string(r.oifname_prefix ? "oifname" : "iifname") + " != @" + *r.ifname_not_in);
  }
  if (r.ip_options) Append(out, "ip hdrlength != 5");
  if (r.routing_header) Append(out, "exthdr rt exists");
  if (r.saddr) {
    Append(out,
           Ip(r.saddr->family()) + " saddr " + (r.saddr_negate ? "!= " : "") + Prefix(*r.saddr));
  }
  if (r.saddr_set) Append(out, Ip(*r.set_family) + " saddr @" + *r.saddr_set);
  for (const Cidr& c : r.saddr_not) Append(out, Ip(c.family()) + " saddr != " + Prefix(c));
  if (r.daddr) Append(out, Ip(r.daddr->family()) + " daddr " + Prefix(*r.daddr));
  if (r.daddr_set) Append(out, Ip(*r.set_family) + " daddr @" + *r.daddr_set);
  for (const Cidr& c : r.daddr_not) Append(out, Ip(c.family()) + " daddr != " + Prefix(c));
  if (r.l4proto) Append(out, "meta l4proto " + Proto(*r.l4proto));
  if (r.icmpv6_type) Append(out, "icmpv6 type " + std::to_string(*r.icmpv6_type));
  if (r.dports.size() == 1) Append(out, "th dport " + ToString(r.dports[0]));
  if (r.dports.size() > 1) {
    std::string set;
    for (const PortRange& p : r.dports) set += (set.empty() ? "" : ", ") + ToString(p);
    Append(out, "th dport { " + set + " }");
  }
  if (r.sports.size() == 1) Append(out, "th sport " + ToString(r.sports[0]));
  if (r.sports.size() > 1) {
    std::string set;
    for (const PortRange& p : r.sports) set += (set.empty() ? "" : ", ") + ToString(p);
    Append(out, "th sport { " + set + " }");
  }
  if (r.ct_established_related) Append(out, "ct state established,related");
  if (r.ct_unsolicited) Append(out, "ct state invalid,new,untracked");
  if (r.ct_related) Append(out, "ct state related");
  if (r.pin_set) {
    Append(out, Ip(*r.pin_family) +
                    (r.pin_by_source ? " saddr . th sport @" : " daddr . th dport @") + *r.pin_set);
  }
  if (r.allow_set) {
    Append(out, std::string("meta l4proto . ") + Ip(*r.set_family) +
                    (r.pin_by_source ? " saddr . th sport @" : " daddr . th dport @") +
                    *r.allow_set);
  }
  if (r.oifname) Append(out, "oifname \"" + *r.oifname + "\"");
  if (r.counter) Append(out, "counter name \"" + *r.counter + "\"");
  Append(out, VerdictText(r.verdict));
  if (r.target) Append(out, *r.target);
  if (!r.comment.empty()) Append(out, "comment \"" + r.comment + "\"");
  return out;
}

std::string RenderAddTap(const TapRuleset& rs) {
  const std::string t = "inet " + rs.names.table;
  std::string out;
  for (const ChainSpec* c : rs.chains()) {
    out += "add chain " + t + " " + c->name + "\n";
  }
  for (const std::string& c : rs.counters)
    out.append("add counter ").append(t).append(" ").append(c).append("\n");
  for (const PinSetSpec& s : rs.pin_sets) {
    out += "add set " + t + " " + s.name + " { type ";
    out += s.family == Family::kV4 ? "ipv4_addr" : "ipv6_addr";
    out += " . inet_service; flags timeout; size " + std::to_string(s.max_elements) + "; }\n";
  }
  for (const AllowSetSpec& s : rs.allow_sets) {
    out += "add set " + t + " " + s.name + " { type inet_proto . ";
    out += s.family == Family::kV4 ? "ipv4_addr" : "ipv6_addr";
    out += " . inet_service; flags interval; }\n";
    if (s.elements.empty()) continue;
    std::string elements;
    for (const AllowElement& e : s.elements) {
      elements += (elements.empty() ? "" : ", ") + Proto(e.l4proto) + " . " +
                  Prefix(e.destination) + " . " + ToString(e.ports);
    }
    out += "add element " + t + " " + s.name + " { " + elements + " }\n";
  }
  for (const ChainSpec* c : rs.chains()) {
    for (const Rule& r : c->rules)
      out += "add rule " + t + " " + c->name + " " + RenderRule(r) + "\n";
  }
  out += "add element " + t + " " + kEgressMap + " { \"" + rs.tap + "\" : jump " +
         rs.names.egress_chain + " }\n";
  out += "add element " + t + " " + kInboundMap + " { \"" + rs.tap + "\" : jump " +
         rs.names.inbound_chain + " }\n";
  out += "add element " + t + " " + kInputMap + " { \"" + rs.tap + "\" : jump " +
         rs.names.input_chain + " }\n";
  out += std::string("add element inet ") + kGuardTable + " " + kGuardSet + " { \"" + rs.tap +
         "\" }\n";
  return out;
}

std::string RenderSkeleton(const SkeletonConfig& config) {
  std::string out;
  for (uint32_t shard = 0; shard < std::max(config.shards, 1U); ++shard) {
    const std::string t = "inet " + ShardTableName(shard, config.shards);
    out += "add table " + t + "\n";
    out += "add chain " + t + " " + kForwardChain +
           " { type filter hook forward priority 0; policy accept; }\n";
    out += "add chain " + t + " " + kInputChain +
           " { type filter hook input priority 0; policy accept; }\n";
    for (const char* map : {kEgressMap, kInboundMap, kInputMap}) {
      out += "add map " + t + " " + map + " { type ifname : verdict; }\n";
    }
    for (const SkeletonSet& set : SkeletonSets()) {
      out += "add set " + t + " " + set.name + " { type " +
             (set.family == Family::kV4 ? "ipv4_addr" : "ipv6_addr") + "; flags interval; }\n";
      out += "flush set " + t + " " + set.name + "\n";
      std::string elements;
      for (const Cidr& c : set.ranges) elements += (elements.empty() ? "" : ", ") + Prefix(c);
      out += "add element " + t + " " + set.name + " { " + elements + " }\n";
    }
    out += "add chain " + t + " " + kNeighbourDiscoveryChain + "\n";
    out += "flush chain " + t + " " + kNeighbourDiscoveryChain + "\n";
    for (const Rule& r : BuildNeighbourDiscoveryRules()) {
      out += "add rule " + t + " " + kNeighbourDiscoveryChain + " " + RenderRule(r) + "\n";
    }
    out += "flush chain " + t + " " + kForwardChain + "\n";
    out += "flush chain " + t + " " + kInputChain + "\n";
    out += "add rule " + t + " " + kForwardChain + " oifname vmap @" + kInboundMap + "\n";
    out += "add rule " + t + " " + kForwardChain + " iifname vmap @" + kEgressMap + "\n";
    out += "add rule " + t + " " + kInputChain + " iifname vmap @" + kInputMap + "\n";
  }
  {
    const std::string g = std::string("inet ") + kGuardTable;
    out += "add table " + g + "\n";
    for (const auto& [chain, hook] :
         {std::pair{kForwardChain, "forward"}, std::pair{kInputChain, "input"}}) {
      out += "add chain " + g + " " + chain + " { type filter hook " + hook +
             " priority -10; policy accept; }\n";
    }
    out += "add set " + g + " " + kGuardSet + " { type ifname; }\n";
    out += "flush chain " + g + " " + kForwardChain + "\n";
    out += "flush chain " + g + " " + kInputChain + "\n";
    for (const Rule& r : BuildForwardFailClosedRules(config)) {
      out += "add rule " + g + " " + kForwardChain + " " + RenderRule(r) + "\n";
    }
    for (const Rule& r : BuildInputFailClosedRules(config)) {
      out += "add rule " + g + " " + kInputChain + " " + RenderRule(r) + "\n";
    }
  }
  if (config.uplink) {
    const std::string n = std::string("inet ") + kNatTable;
    out += "add table " + n + "\n";
    out += "add chain " + n + " " + kPostroutingChain +
           " { type nat hook postrouting priority 100; policy accept; }\n";
    out += "flush chain " + n + " " + kPostroutingChain + "\n";
    for (const Rule& r : BuildMasqueradeRules(config)) {
      out += "add rule " + n + " " + kPostroutingChain + " " + RenderRule(r) + "\n";
    }
  }
  return out;
}

}  // namespace forkd::netfilter
