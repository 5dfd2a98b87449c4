// Encodes the ruleset model into libnftnl objects appended to a Batch. Every
// function appends exactly the messages its name says, nothing else, so the
// operations in nftables.cc read as a list of what one transaction does.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "netfilter/nft_batch.h"
#include "netfilter/ruleset.h"

namespace forkd::netfilter::encode {

// `exclusive`: fail with EEXIST if the object exists (otherwise a no-op).
void NewTable(Batch& b, const std::string& table);
void DelTable(Batch& b, const std::string& table);

struct BaseChain {
  const char* type;  // "filter" or "nat"
  uint32_t hook;     // NF_INET_*
  int32_t priority;
};
void NewBaseChain(Batch& b, const std::string& table, const std::string& chain,
                  const BaseChain& base);
void NewChain(Batch& b, const std::string& table, const std::string& chain, bool exclusive);
void FlushChain(Batch& b, const std::string& table, const std::string& chain);
// Deletes a chain and its rules; its dispatch elements must be gone first.
void DelChain(Batch& b, const std::string& table, const std::string& chain);

// `what` describes the message for errors (Batch::Begin), maybe in pieces.
void NewRule(Batch& b, const std::string& table, const std::string& chain, const Rule& rule,
             std::initializer_list<std::string_view> what);
inline void NewRule(Batch& b, const std::string& table, const std::string& chain, const Rule& rule,
                    std::string_view what) {
  NewRule(b, table, chain, rule, {what});
}
// `<meta key> vmap @map`: the dispatch rule of a base chain.
void NewDispatchRule(Batch& b, const std::string& table, const std::string& chain,
                     const std::string& map, bool by_output_interface);

void NewCounter(Batch& b, const std::string& table, const std::string& name, bool exclusive);
void DelCounter(Batch& b, const std::string& table, const std::string& name);

void NewDispatchMap(Batch& b, const std::string& table, const std::string& map);
void NewPinSet(Batch& b, const std::string& table, const PinSetSpec& set, bool exclusive);
void DelSet(Batch& b, const std::string& table, const std::string& set);

// A plain set of interface names, and its elements.
void NewIfnameSet(Batch& b, const std::string& table, const std::string& set);
void NewIfnameElement(Batch& b, const std::string& table, const std::string& set,
                      const std::string& ifname);
void DelIfnameElement(Batch& b, const std::string& table, const std::string& set,
                      const std::string& ifname);

void NewDispatchElement(Batch& b, const std::string& table, const std::string& map,
                        const std::string& ifname, const std::string& chain);
void DelDispatchElement(Batch& b, const std::string& table, const std::string& map,
                        const std::string& ifname);

struct PinElement {
  IpAddress address;
  uint16_t port;
  uint64_t timeout_ms;
};
// A named interval set of addresses (flags interval), created if missing and
// its contents replaced by `ranges` (sorted, disjoint, not adjacent).
void NewAddressSet(Batch& b, const std::string& table, const std::string& name, Family family,
                   const std::vector<Cidr>& ranges);

// A tap's allow set (ruleset.h, AllowSetSpec): created (`exclusive`: fail if
// it exists) and, with `flush_first`, emptied before its elements are added.
void NewAllowSet(Batch& b, const std::string& table, const AllowSetSpec& set, bool exclusive,
                 bool flush_first);

void NewPinElements(Batch& b, const std::string& table, const std::string& set, Family family,
                    const std::vector<PinElement>& elements);

}  // namespace forkd::netfilter::encode
