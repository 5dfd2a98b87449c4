// The answer filter: turns an upstream response into the answer a guest may
// see, and the list of addresses that must be pinned before it does. Pure (no
// sockets, no clock), so it is unit-tested and fuzzed on its own.
//
// What survives, for a question (name N, type A or AAAA):
//  - the CNAME chain that starts at N, followed in the answer section (the
//    targets need not be allowlisted: what is filtered and pinned is each
//    final address);
//  - the records of the question's type owned by the chain's last name whose
//    address is public (address_class.h).
// Everything else is removed: addresses that are not public (counted by
// reason), records off the chain, every authority and additional record (glue
// there would be unfiltered addresses), DNSSEC records, other types.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/dns/address_class.h"
#include "forkd/dns/query.h"
#include "netfilter/ip.h"

namespace forkd::dns {

struct FilterLimits {
  // A pin lasts max(record TTL, min_pin): a guest that caches for the TTL
  // always finds its address still pinned.
  std::chrono::seconds min_pin{30};
  // Record TTLs given to the guest are capped here (and so are pins).
  uint32_t max_ttl = 3600;
};

struct AddressPin {
  netfilter::IpAddress address;
  std::chrono::seconds duration{0};
  friend bool operator==(const AddressPin&, const AddressPin&) = default;
};

struct StripCounts {
  // Non-public answer addresses, by AddressClass (kPublic stays 0).
  std::array<uint64_t, kAddressClassCount> by_class{};
  uint64_t off_chain = 0;       // answer records not on the question's chain
  uint64_t other_sections = 0;  // authority + additional records
  uint64_t too_large = 0;       // public addresses left out so the answer fits
};

struct FilteredAnswer {
  enum class Kind {
    kAnswer,         // `wire` is the guest's answer, after pinning `pins`
    kTruncated,      // the upstream set TC: ask again over TCP
    kUpstreamError,  // upstream rcode other than NOERROR/NXDOMAIN: SERVFAIL
  };
  Kind kind = Kind::kAnswer;
  ldns_pkt_rcode upstream_rcode = LDNS_RCODE_NOERROR;
  std::vector<uint8_t> wire;
  std::vector<AddressPin> pins;  // one per distinct released address
  StripCounts stripped;
};

// Filters `upstream` (the raw response to the query sent with id
// `upstream_id` for `query`). InvalidArgument when the response is malformed,
// is not a response, or does not match the id and question that were sent:
// such a message is dropped (a spoofing attempt or garbage), never answered
// from.
absl::StatusOr<FilteredAnswer> FilterAnswer(const GuestQuery& query, uint16_t upstream_id,
                                            std::span<const uint8_t> upstream,
                                            const FilterLimits& limits);

}  // namespace forkd::dns
