// What nftables objects and rules a tap gets: a pure model, built from a
// validated TapPolicy. The netlink encoder (nft_encode.cc) and the text
// renderer (nft_text.cc) both consume it, so the library and the `nft -f`
// baseline of the benchmark install exactly the same ruleset.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "netfilter/ip.h"
#include "netfilter/policy.h"
#include "netfilter/tap_name.h"

namespace forkd::netfilter {

// Names of the shared objects (one set per network namespace).
inline constexpr char kTable[] = "forkd";         // inet: filtering (the only shard by default)
inline constexpr char kNatTable[] = "forkd_nat";  // inet: masquerade
inline constexpr char kForwardChain[] = "forward";
inline constexpr char kInputChain[] = "input";
inline constexpr char kPostroutingChain[] = "postrouting";
inline constexpr char kEgressMap[] = "egress_dispatch";    // iifname -> jump tap_T_egress
inline constexpr char kInboundMap[] = "inbound_dispatch";  // oifname -> jump tap_T_inbound
inline constexpr char kInputMap[] = "input_dispatch";      // iifname -> jump tap_T_input
// The cloud metadata table (metadata.h) as one interval set per family and
// filter table, filled by EnsureSkeleton and looked up by every tap's chains.
inline constexpr char kMetadataSet4[] = "cloud_metadata4";
inline constexpr char kMetadataSet6[] = "cloud_metadata6";
// The private ranges (ip.h, PrivateRanges) the same way; each tap's rule
// subtracts its own exceptions.
inline constexpr char kPrivateSet4[] = "private4";
inline constexpr char kPrivateSet6[] = "private6";
// Checks that are the same for every tap live once per filter table in a
// chain of their own that each tap's chains jump to: fewer rules (and kernel
// expressions) per AddTap. IPv6 neighbour discovery, which a tap's input chain
// jumps to once its foreign-source check has passed.
inline constexpr char kNeighbourDiscoveryChain[] = "neighbour_discovery";
// Fail closed: a table of its own (shards only know their own taps) whose base
// chains drop packets from or to an interface with forkd's tap naming that is
// not in its set of installed taps. AddTap adds the tap last, RemoveTap
// removes it first.
inline constexpr char kGuardTable[] = "forkd_guard";
inline constexpr char kGuardSet[] = "installed_taps";
// Forkd's tap naming (tap_name.h): SkeletonConfig::tap_prefix unless
// configured otherwise.
inline constexpr const char* kDefaultTapPrefix = kForkdTapPrefix;

enum class Verdict : uint8_t { kNone, kAccept, kDrop, kReturn, kGoto, kJump, kMasquerade };

// One rule: every present field must match (logical AND), then the verdict.
struct Rule {
  std::optional<Cidr> saddr;
  bool saddr_negate = false;    // match packets whose source is NOT in saddr
  std::vector<Cidr> saddr_not;  // and the source is in none of these
  std::optional<Cidr> daddr;
  std::vector<Cidr> daddr_not;  // and the destination is in none of these
  // The destination is in this named interval set (of family set_family).
  std::optional<std::string> daddr_set;
  std::optional<std::string> saddr_set;  // the source is in this named set
  std::optional<Family> set_family;
  bool ip_options = false;      // IPv4 header longer than 20 bytes (`ip hdrlength != 5`)
  bool routing_header = false;  // IPv6 routing header of any type (`exthdr rt exists`)
  std::optional<uint8_t> l4proto;
  // Destination ports (sorted, disjoint); several become one anonymous set.
  std::vector<PortRange> dports;
  std::vector<PortRange> sports;  // source ports, the same way (reply rules)
  std::optional<uint8_t> icmpv6_type;
  bool ct_established_related = false;
  bool ct_unsolicited = false;         // ct state invalid, new or untracked
  bool ct_related = false;             // ct state related
  std::optional<Family> only_family;   // bare `meta nfproto` match (no address field)
  std::optional<std::string> pin_set;  // (daddr . th dport) in this set; family from the set
  std::optional<Family> pin_family;
  // (meta l4proto . daddr . th dport) in this allow set (of family set_family).
  std::optional<std::string> allow_set;
  // Pin and allow-set lookups key on (saddr . th sport) instead: a reply from
  // the destination.
  bool pin_by_source = false;
  std::optional<std::string> oifname;  // output interface name
  // Interface names starting with this (`iifname "sbt*"`, `oifname "sbt*"`).
  std::optional<std::string> iifname_prefix;
  std::optional<std::string> oifname_prefix;
  // And that interface name is not in this set (of kGuardTable).
  std::optional<std::string> ifname_not_in;
  std::optional<std::string> counter;  // named counter to bump
  Verdict verdict = Verdict::kNone;
  std::optional<std::string> target;  // chain for kGoto and kJump
  // Only packets of family() reach this rule (its chain is per family), so the
  // encoder leaves out the `meta nfproto` check.
  bool family_known = false;
  std::string comment;  // why the rule exists; shown by `nft list`

  // The address family this rule is restricted to, if any.
  std::optional<Family> family() const;
};

struct ChainSpec {
  std::string name;
  std::vector<Rule> rules;
};

// The policy's ported allow rules as one concatenated interval set per family:
// `meta l4proto . ip daddr . th dport` ranges. One lookup replaces a rule per
// allow rule and protocol, and egress and inbound share it.
struct AllowElement {
  uint8_t l4proto;
  Cidr destination;
  PortRange ports;
};
struct AllowSetSpec {
  std::string name;
  Family family;
  std::vector<AllowElement> elements;
};

struct PinSetSpec {
  std::string name;
  Family family;
  uint32_t max_elements;
};

// The filter table ("shard") a tap lives in. One table serves a pod
// namespace (one tap); a namespace holding many taps spreads them over
// `shards` tables because the kernel re-validates a whole table, every chain
// of every tap in it, on each change that touches a rule or a jump: with 1000
// taps in one table every install costs ~12 ms, with 32 shards ~1/32 of that.
// Each existing shard costs forwarded packets one more base chain, so the
// count is the operator's trade-off (SkeletonConfig::shards).
std::string ShardTable(const std::string& tap, uint32_t shards);
std::string ShardTableName(uint32_t index, uint32_t shards);
bool IsForkdFilterTable(const std::string& table);

struct TapObjectNames {
  std::string table;
  std::string egress_chain, egress6_chain, inbound_chain, inbound6_chain, input_chain;
  std::string pin_set_v4, pin_set_v6;
  std::string allow_set_v4, allow_set_v6;
  std::string tx_counter, spoof_counter;
};
TapObjectNames NamesFor(const std::string& tap, const std::string& table = kTable);
// The tap a chain name belongs to, if it is a per-tap egress chain.
std::optional<std::string> TapFromEgressChain(const std::string& chain);

struct TapRuleset {
  std::string tap;
  TapObjectNames names;
  ChainSpec egress;   // forward hook, packets from the tap (IPv4 after anti-spoof)
  ChainSpec egress6;  // the IPv6 part of egress (empty without a guest IPv6 address)
  // Forward hook, packets to the tap: replies (IPv4, after the state gate)
  // whose sender the policy in force still allows return, the rest is dropped.
  ChainSpec inbound;
  ChainSpec inbound6;  // the IPv6 part of inbound (empty without a guest IPv6 address)
  ChainSpec input;     // input hook, packets from the tap to pod-local addresses

  std::vector<PinSetSpec> pin_sets;
  std::vector<AllowSetSpec> allow_sets;  // both families, always (maybe empty)
  std::vector<std::string> counters;

  // Every chain, in creation order (a chain exists before a jump to it).
  std::array<const ChainSpec*, 5> chains() const {
    return {&egress6, &egress, &inbound6, &inbound, &input};
  }
};

// `policy` must have passed Validate().
TapRuleset BuildTapRuleset(const TapPolicy& policy, const std::string& table = kTable);

// Shared skeleton configuration.
struct SkeletonConfig {
  // Masquerade sandbox traffic from `guest_subnets` leaving through `uplink`.
  // No uplink: no NAT table is installed (and an existing one is left alone).
  std::optional<std::string> uplink;
  std::vector<Cidr> guest_subnets;
  // Filter tables to spread taps over (see ShardTable); 1..256.
  uint32_t shards = 1;
  // Forkd's tap naming. The base chains drop every packet from (and to) an
  // interface whose name starts with this and that has no dispatch entry:
  // a tap between RemoveTap and its deletion, or one whose AddTap never ran,
  // is fenced off, not open. Empty: no such rule (not recommended).
  std::string tap_prefix = kDefaultTapPrefix;
};

absl::Status Validate(const SkeletonConfig& config);

// Rules of the masquerade chain.
std::vector<Rule> BuildMasqueradeRules(const SkeletonConfig& config);

// The rules of kGuardTable's forward and input chains: a packet from or to an
// interface with forkd's tap naming that is not in kGuardSet is dropped.
std::vector<Rule> BuildForwardFailClosedRules(const SkeletonConfig& config);
std::vector<Rule> BuildInputFailClosedRules(const SkeletonConfig& config);

// The rules of kNeighbourDiscoveryChain (every filter table): accept the IPv6
// neighbour discovery a guest needs; anything else returns to the tap's
// input chain, which drops it.
std::vector<Rule> BuildNeighbourDiscoveryRules();

// The metadata table's ranges of one family, sorted and merged, as the
// interval set holds them.
std::vector<Cidr> MetadataSetRanges(Family family);
std::vector<Cidr> PrivateSetRanges(Family family);

// The address sets EnsureSkeleton creates in every filter table.
struct SkeletonSet {
  const char* name;
  Family family;
  std::vector<Cidr> ranges;
};
std::vector<SkeletonSet> SkeletonSets();

}  // namespace forkd::netfilter
