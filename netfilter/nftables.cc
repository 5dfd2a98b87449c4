#include "netfilter/nftables.h"

#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <memory>

#include "common/c_ptr.h"
#include "common/errno_status.h"
#include "netfilter/nft_encode.h"

namespace forkd::netfilter {
namespace {

// Upper bound on messages per batch we size sequence numbers for.
constexpr uint32_t kSeqWindow = 1U << 16;

void AppendRules(Batch& b, const ChainSpec& chain, const std::string& tap) {
  for (size_t i = 0; i < chain.rules.size(); ++i) {
    encode::NewRule(b, kTable, chain.name, chain.rules[i],
                    "add rule " + std::to_string(i + 1) + " (" + chain.rules[i].comment +
                        ") to chain " + chain.name + " of tap " + tap);
  }
}

struct ChainList {
  std::string table;
  std::vector<std::string> names;
};

int CollectChain(const nlmsghdr* nlh, void* data) {
  auto* out = static_cast<ChainList*>(data);
  CPtr<nftnl_chain, nftnl_chain_free> c(nftnl_chain_alloc());
  if (nftnl_chain_nlmsg_parse(nlh, c.get()) < 0) return MNL_CB_ERROR;
  const char* table = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE);
  const char* name = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME);
  if (table != nullptr && name != nullptr && out->table == table) out->names.emplace_back(name);
  return MNL_CB_OK;
}

}  // namespace

absl::StatusOr<Nftables> Nftables::Open(int netns_fd) {
  FORKD_ASSIGN_OR_RETURN(NetlinkSocket sock, NetlinkSocket::Open(netns_fd));
  return Nftables(std::move(sock));
}

Batch Nftables::NewBatch() { return Batch(sock_.NextSeq(kSeqWindow)); }

absl::Status Nftables::Commit(Batch& batch, const std::string& context) {
  return sock_.Send(batch, context);
}

absl::Status Nftables::EnsureSkeleton(const SkeletonConfig& config) {
  FORKD_RETURN_IF_ERROR(Validate(config));
  Batch b = NewBatch();
  encode::NewTable(b, kTable);
  encode::NewBaseChain(b, kTable, kForwardChain, {"filter", NF_INET_FORWARD, 0});
  encode::NewBaseChain(b, kTable, kInputChain, {"filter", NF_INET_LOCAL_IN, 0});
  for (const char* map : {kEgressMap, kInboundMap, kInputMap})
    encode::NewDispatchMap(b, kTable, map);
  // Flush and refill the base chains inside the transaction: a re-run never
  // duplicates a dispatch rule and no packet sees an empty base chain.
  encode::FlushChain(b, kTable, kForwardChain);
  encode::FlushChain(b, kTable, kInputChain);
  // Inbound first: its chains only `return` or drop, so a packet between two
  // taps still meets the sender's egress chain afterwards.
  encode::NewDispatchRule(b, kTable, kForwardChain, kInboundMap, /*by_output_interface=*/true);
  encode::NewDispatchRule(b, kTable, kForwardChain, kEgressMap, /*by_output_interface=*/false);
  encode::NewDispatchRule(b, kTable, kInputChain, kInputMap, /*by_output_interface=*/false);
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
  // Tables that do not exist are not an error: "remove all" is the crash
  // recovery path and must work on a clean namespace too.
  for (const char* table : {kTable, kNatTable}) {
    Batch b = NewBatch();
    encode::NewTable(b, table);  // make the delete unconditional in one batch
    encode::DelTable(b, table);
    FORKD_RETURN_IF_ERROR(Commit(b, std::string("remove table ") + table));
  }
  return absl::OkStatus();
}

void Nftables::AppendAddTap(Batch& b, const TapRuleset& rs) {
  for (const ChainSpec* c : {&rs.egress, &rs.inbound, &rs.input}) {
    encode::NewChain(b, kTable, c->name, /*exclusive=*/true);
  }
  for (const std::string& counter : rs.counters) encode::NewCounter(b, kTable, counter, true);
  for (const PinSetSpec& set : rs.pin_sets) encode::NewPinSet(b, kTable, set, true);
  for (const ChainSpec* c : {&rs.egress, &rs.inbound, &rs.input}) AppendRules(b, *c, rs.tap);
  // Dispatch last: the tap is governed from the moment the transaction
  // commits, and never jumps into a chain that is still being filled.
  encode::NewDispatchElement(b, kTable, kEgressMap, rs.tap, rs.names.egress_chain);
  encode::NewDispatchElement(b, kTable, kInboundMap, rs.tap, rs.names.inbound_chain);
  encode::NewDispatchElement(b, kTable, kInputMap, rs.tap, rs.names.input_chain);
}

absl::Status Nftables::AddTap(const TapPolicy& policy) {
  FORKD_RETURN_IF_ERROR(Validate(policy));
  const TapRuleset rs = BuildTapRuleset(policy);
  Batch b = NewBatch();
  AppendAddTap(b, rs);
  return Commit(b, "add tap " + policy.tap);
}

absl::Status Nftables::ReplaceTap(const TapPolicy& policy) {
  FORKD_RETURN_IF_ERROR(Validate(policy));
  const TapRuleset rs = BuildTapRuleset(policy);
  Batch b = NewBatch();
  for (const ChainSpec* c : {&rs.egress, &rs.inbound, &rs.input}) {
    encode::FlushChain(b, kTable, c->name);
  }
  for (const ChainSpec* c : {&rs.egress, &rs.inbound, &rs.input}) AppendRules(b, *c, rs.tap);
  return Commit(b, "replace policy of tap " + policy.tap);
}

absl::Status Nftables::RemoveTap(std::string_view tap_view) {
  const std::string tap(tap_view);
  FORKD_RETURN_IF_ERROR(ValidateName("tap", tap, kMaxTapNameLength));
  const TapObjectNames n = NamesFor(tap);
  Batch b = NewBatch();
  // Elements first: they hold references to the chains.
  encode::DelDispatchElement(b, kTable, kEgressMap, tap);
  encode::DelDispatchElement(b, kTable, kInboundMap, tap);
  encode::DelDispatchElement(b, kTable, kInputMap, tap);
  for (const std::string* chain : {&n.egress_chain, &n.inbound_chain, &n.input_chain}) {
    encode::DelChain(b, kTable, *chain);
  }
  encode::DelSet(b, kTable, n.pin_set_v4);
  encode::DelSet(b, kTable, n.pin_set_v6);
  encode::DelCounter(b, kTable, n.tx_counter);
  encode::DelCounter(b, kTable, n.spoof_counter);
  return Commit(b, "remove tap " + tap);
}

absl::StatusOr<std::vector<std::string>> Nftables::ListTaps() {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  const uint32_t seq = sock_.NextSeq(1);
  nlmsghdr* nlh =
      nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETCHAIN, NFPROTO_INET, NLM_F_DUMP, seq);
  ChainList chains{kTable, {}};
  FORKD_RETURN_IF_ERROR(sock_.Dump(nlh, CollectChain, &chains, "list taps"));
  std::vector<std::string> taps;
  for (const std::string& chain : chains.names) {
    if (auto tap = TapFromEgressChain(chain)) taps.push_back(*tap);
  }
  std::sort(taps.begin(), taps.end());
  return taps;
}

absl::Status Nftables::Pin(std::string_view tap_view, const std::vector<netfilter::Pin>& pins) {
  const std::string tap(tap_view);
  FORKD_RETURN_IF_ERROR(ValidateName("tap", tap, kMaxTapNameLength));
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
  const TapObjectNames n = NamesFor(tap);
  Batch b = NewBatch();
  if (!v4.empty()) encode::NewPinElements(b, kTable, n.pin_set_v4, Family::kV4, v4);
  if (!v6.empty()) encode::NewPinElements(b, kTable, n.pin_set_v6, Family::kV6, v6);
  return Commit(b, "pin destinations for tap " + tap);
}

}  // namespace forkd::netfilter
