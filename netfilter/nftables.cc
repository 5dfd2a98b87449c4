#include "netfilter/nftables.h"

#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <memory>
#include <string_view>

#include "common/c_ptr.h"
#include "common/errno_status.h"
#include "netfilter/nft_encode.h"

namespace forkd::netfilter {
namespace {

// Upper bound on messages per batch we size sequence numbers for.
constexpr uint32_t kSeqWindow = 1U << 16;

void AppendRules(Batch& b, const std::string& table, const ChainSpec& chain,
                 const std::string& tap) {
  for (size_t i = 0; i < chain.rules.size(); ++i) {
    std::array<char, 16> number{};
    const auto [end, ec] = std::to_chars(number.begin(), number.end(), i + 1);
    encode::NewRule(b, table, chain.name, chain.rules[i],
                    {"add rule ", std::string_view(number.data(), end - number.data()), " (",
                     chain.rules[i].comment, ") to chain ", chain.name, " of tap ", tap});
  }
}

// Chains of forkd's filter tables.
int CollectChain(const nlmsghdr* nlh, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  CPtr<nftnl_chain, nftnl_chain_free> c(nftnl_chain_alloc());
  if (nftnl_chain_nlmsg_parse(nlh, c.get()) < 0) return MNL_CB_ERROR;
  const char* table = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE);
  const char* name = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME);
  if (table != nullptr && name != nullptr && IsForkdFilterTable(table)) out->emplace_back(name);
  return MNL_CB_OK;
}

// Every forkd table (filter shards and NAT).
int CollectTable(const nlmsghdr* nlh, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  CPtr<nftnl_table, nftnl_table_free> t(nftnl_table_alloc());
  if (nftnl_table_nlmsg_parse(nlh, t.get()) < 0) return MNL_CB_ERROR;
  const char* name = nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME);
  if (name != nullptr && (IsForkdFilterTable(name) || std::string(name) == kNatTable ||
                          std::string(name) == kGuardTable)) {
    out->emplace_back(name);
  }
  return MNL_CB_OK;
}

}  // namespace

absl::StatusOr<Nftables> Nftables::Open(int netns_fd, uint32_t shards) {
  if (shards < 1 || shards > 256) return absl::InvalidArgumentError("shards must be 1..256");
  FORKD_ASSIGN_OR_RETURN(NetlinkSocket sock, NetlinkSocket::Open(netns_fd));
  return Nftables(std::move(sock), shards);
}

std::string Nftables::TableFor(const std::string& tap) const { return ShardTable(tap, shards_); }

Batch Nftables::NewBatch() { return Batch(sock_.NextSeq(kSeqWindow), std::move(spare_)); }

absl::Status Nftables::Commit(Batch& batch, const std::string& context) {
  absl::Status status = sock_.Send(batch, context);
  spare_ = std::move(batch).TakeStorage();
  return status;
}

absl::Status Nftables::EnsureSkeleton(const SkeletonConfig& config) {
  FORKD_RETURN_IF_ERROR(Validate(config));
  if (config.shards != shards_) {
    return absl::InvalidArgumentError("skeleton: " + std::to_string(config.shards) +
                                      " shards requested but this handle was opened for " +
                                      std::to_string(shards_));
  }
  Batch b = NewBatch();
  for (uint32_t shard = 0; shard < shards_; ++shard) {
    const std::string table = ShardTableName(shard, shards_);
    encode::NewTable(b, table);
    encode::NewBaseChain(b, table, kForwardChain, {"filter", NF_INET_FORWARD, 0});
    encode::NewBaseChain(b, table, kInputChain, {"filter", NF_INET_LOCAL_IN, 0});
    for (const char* map : {kEgressMap, kInboundMap, kInputMap})
      encode::NewDispatchMap(b, table, map);
    for (const SkeletonSet& set : SkeletonSets()) {
      encode::NewAddressSet(b, table, set.name, set.family, set.ranges);
    }
    // The checks every tap's chains share, refilled the same way.
    encode::NewChain(b, table, kNeighbourDiscoveryChain, /*exclusive=*/false);
    encode::FlushChain(b, table, kNeighbourDiscoveryChain);
    for (const Rule& r : BuildNeighbourDiscoveryRules()) {
      encode::NewRule(b, table, kNeighbourDiscoveryChain, r,
                      "add rule to chain " + std::string(kNeighbourDiscoveryChain));
    }
    // Flush and refill the base chains inside the transaction: a re-run never
    // duplicates a dispatch rule and no packet sees an empty base chain.
    encode::FlushChain(b, table, kForwardChain);
    encode::FlushChain(b, table, kInputChain);
    // Inbound first: its chains only `return` or drop, so a packet between two
    // taps still meets the sender's egress chain afterwards.
    encode::NewDispatchRule(b, table, kForwardChain, kInboundMap, /*by_output_interface=*/true);
    encode::NewDispatchRule(b, table, kForwardChain, kEgressMap, /*by_output_interface=*/false);
    encode::NewDispatchRule(b, table, kInputChain, kInputMap, /*by_output_interface=*/false);
  }
  // Fail closed (ruleset.h, kGuardTable). Always created, so AddTap can
  // register every tap; the rules only with a tap prefix.
  encode::NewTable(b, kGuardTable);
  encode::NewBaseChain(b, kGuardTable, kForwardChain, {"filter", NF_INET_FORWARD, -10});
  encode::NewBaseChain(b, kGuardTable, kInputChain, {"filter", NF_INET_LOCAL_IN, -10});
  encode::NewIfnameSet(b, kGuardTable, kGuardSet);
  encode::FlushChain(b, kGuardTable, kForwardChain);
  encode::FlushChain(b, kGuardTable, kInputChain);
  for (const Rule& r : BuildForwardFailClosedRules(config)) {
    encode::NewRule(b, kGuardTable, kForwardChain, r, "add fail-closed rule to forward");
  }
  for (const Rule& r : BuildInputFailClosedRules(config)) {
    encode::NewRule(b, kGuardTable, kInputChain, r, "add fail-closed rule to input");
  }
  if (config.uplink) {
    encode::NewTable(b, kNatTable);
    encode::NewBaseChain(b, kNatTable, kPostroutingChain, {"nat", NF_INET_POST_ROUTING, 100});
    encode::FlushChain(b, kNatTable, kPostroutingChain);
    for (const Rule& r : BuildMasqueradeRules(config)) {
      encode::NewRule(b, kNatTable, kPostroutingChain, r,
                      "add masquerade rule for " + r.saddr->ToString());
    }
  }
  return Commit(b, "ensure skeleton");
}

absl::Status Nftables::RemoveAll() {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_DUMP,
                                        sock_.NextSeq(1));
  std::vector<std::string> tables;
  FORKD_RETURN_IF_ERROR(sock_.Dump(nlh, CollectTable, &tables, "remove all: list tables"));
  if (tables.empty()) return absl::OkStatus();  // crash recovery on a clean namespace
  Batch b = NewBatch();
  for (const std::string& table : tables) encode::DelTable(b, table);
  return Commit(b, "remove all");
}

void Nftables::AppendAddTap(Batch& b, const TapRuleset& rs) {
  const std::string& t = rs.names.table;
  for (const ChainSpec* c : rs.chains()) {
    encode::NewChain(b, t, c->name, /*exclusive=*/true);
  }
  for (const std::string& counter : rs.counters) encode::NewCounter(b, t, counter, true);
  for (const PinSetSpec& set : rs.pin_sets) encode::NewPinSet(b, t, set, true);
  for (const AllowSetSpec& set : rs.allow_sets) {
    encode::NewAllowSet(b, t, set, /*exclusive=*/true, /*flush_first=*/false);
  }
  for (const ChainSpec* c : rs.chains()) AppendRules(b, t, *c, rs.tap);
  // Dispatch last: the tap is governed from the moment the transaction
  // commits, and never jumps into a chain that is still being filled.
  encode::NewDispatchElement(b, t, kEgressMap, rs.tap, rs.names.egress_chain);
  encode::NewDispatchElement(b, t, kInboundMap, rs.tap, rs.names.inbound_chain);
  encode::NewDispatchElement(b, t, kInputMap, rs.tap, rs.names.input_chain);
  encode::NewIfnameElement(b, kGuardTable, kGuardSet, rs.tap);
}

absl::Status Nftables::AddTap(const TapPolicy& policy) {
  FORKD_RETURN_IF_ERROR(Validate(policy));
  const TapRuleset rs = BuildTapRuleset(policy, TableFor(policy.tap));
  Batch b = NewBatch();
  AppendAddTap(b, rs);
  return Commit(b, "add tap " + policy.tap);
}

absl::Status Nftables::ReplaceTap(const TapPolicy& policy) {
  FORKD_RETURN_IF_ERROR(Validate(policy));
  const TapRuleset rs = BuildTapRuleset(policy, TableFor(policy.tap));
  Batch b = NewBatch();
  const std::string& t = rs.names.table;
  for (const ChainSpec* c : rs.chains()) encode::FlushChain(b, t, c->name);
  // The allow sets' contents change with the rules, in the same transaction.
  for (const AllowSetSpec& set : rs.allow_sets) {
    encode::NewAllowSet(b, t, set, /*exclusive=*/false, /*flush_first=*/true);
  }
  for (const ChainSpec* c : rs.chains()) AppendRules(b, t, *c, rs.tap);
  return Commit(b, "replace policy of tap " + policy.tap);
}

absl::Status Nftables::RemoveTap(std::string_view tap_view) {
  const std::string tap(tap_view);
  FORKD_RETURN_IF_ERROR(ValidateName("tap", tap, kMaxTapNameLength));
  const TapObjectNames n = NamesFor(tap, TableFor(tap));
  const std::string& t = n.table;
  Batch b = NewBatch();
  // The guard first: from this transaction on the tap is fenced off entirely
  // until its link is gone (a new AddTap registers it again).
  encode::DelIfnameElement(b, kGuardTable, kGuardSet, tap);
  // Elements first: they hold references to the chains.
  encode::DelDispatchElement(b, t, kEgressMap, tap);
  encode::DelDispatchElement(b, t, kInboundMap, tap);
  encode::DelDispatchElement(b, t, kInputMap, tap);
  for (const std::string* chain :
       {&n.egress_chain, &n.egress6_chain, &n.inbound_chain, &n.inbound6_chain, &n.input_chain}) {
    encode::DelChain(b, t, *chain);
  }
  encode::DelSet(b, t, n.pin_set_v4);
  encode::DelSet(b, t, n.pin_set_v6);
  encode::DelSet(b, t, n.allow_set_v4);
  encode::DelSet(b, t, n.allow_set_v6);
  encode::DelCounter(b, t, n.tx_counter);
  encode::DelCounter(b, t, n.spoof_counter);
  return Commit(b, "remove tap " + tap);
}

absl::StatusOr<std::vector<std::string>> Nftables::ListTaps() {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  const uint32_t seq = sock_.NextSeq(1);
  nlmsghdr* nlh =
      nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETCHAIN, NFPROTO_INET, NLM_F_DUMP, seq);
  std::vector<std::string> chains;
  FORKD_RETURN_IF_ERROR(sock_.Dump(nlh, CollectChain, &chains, "list taps"));
  std::vector<std::string> taps;
  for (const std::string& chain : chains) {
    if (auto tap = TapFromEgressChain(chain)) taps.push_back(*tap);
  }
  std::sort(taps.begin(), taps.end());
  return taps;
}

absl::Status Nftables::Pin(std::string_view tap_view, const std::vector<netfilter::Pin>& pins) {
  const std::string tap(tap_view);
  FORKD_RETURN_IF_ERROR(ValidateName("tap", tap, kMaxTapNameLength));
  if (pins.size() > kMaxPinsPerCall) {
    return absl::InvalidArgumentError("pin for tap " + tap + ": " + std::to_string(pins.size()) +
                                      " pins in one call, at most " +
                                      std::to_string(kMaxPinsPerCall));
  }
  std::vector<encode::PinElement> v4;
  std::vector<encode::PinElement> v6;
  for (const netfilter::Pin& p : pins) {
    if (p.port == 0) return absl::InvalidArgumentError("pin for tap " + tap + ": port 0");
    if (p.timeout.count() <= 0) {
      return absl::InvalidArgumentError("pin for tap " + tap + ": timeout must be positive");
    }
    auto& list = p.address.family == Family::kV4 ? v4 : v6;
    list.push_back({p.address, p.port, static_cast<uint64_t>(p.timeout.count())});
  }
  if (v4.empty() && v6.empty()) return absl::OkStatus();
  const TapObjectNames n = NamesFor(tap, TableFor(tap));
  Batch b = NewBatch();
  if (!v4.empty()) encode::NewPinElements(b, n.table, n.pin_set_v4, Family::kV4, v4);
  if (!v6.empty()) encode::NewPinElements(b, n.table, n.pin_set_v6, Family::kV6, v6);
  return Commit(b, "pin destinations for tap " + tap);
}

}  // namespace forkd::netfilter
