// A guest's question: parsed from its datagram, judged against the allowlist,
// turned into the query forkd sends upstream, or answered with an error.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/dns/ldns_ptr.h"
#include "forkd/dns/name_allowlist.h"

namespace forkd::dns {

// The largest answer forkd sends over UDP and the EDNS size it advertises
// upstream: the DNS flag day 2020 value, which avoids IP fragmentation.
inline constexpr uint16_t kMaxUdpPayload = 1232;
inline constexpr uint16_t kClassicUdpPayload = 512;

struct GuestQuery {
  LdnsPkt packet;                     // the guest's message as parsed
  const ldns_rr* question = nullptr;  // owned by `packet`
  Labels name;
  ldns_rr_type type = LDNS_RR_TYPE_A;
  ldns_rr_class klass = LDNS_RR_CLASS_IN;
  uint16_t id = 0;
  // How large an answer the guest accepts over UDP (512 without EDNS).
  uint16_t max_udp_payload = kClassicUdpPayload;
};

// Parses a guest datagram. A message that is not a query with exactly one
// question (a response, another opcode, no or several questions) or that ldns
// cannot parse is an error: the proxy drops it and counts it as malformed.
absl::StatusOr<GuestQuery> ParseQuery(std::span<const uint8_t> datagram);

// True when the proxy forwards this query: class IN, type A or AAAA, name
// allowlisted. Everything else is refused (README.md says why REFUSED).
bool ShouldForward(const GuestQuery& query, const NameAllowlist& allowlist);

// The query forkd sends upstream for `query`: the same question, recursion
// desired, EDNS with kMaxUdpPayload, id `upstream_id` (fresh and random per
// upstream query, never the guest's).
absl::StatusOr<std::vector<uint8_t>> BuildUpstreamQuery(const GuestQuery& query,
                                                        uint16_t upstream_id);

// An answer to `query` with no records and `rcode` (REFUSED, SERVFAIL).
absl::StatusOr<std::vector<uint8_t>> BuildErrorAnswer(const GuestQuery& query,
                                                      ldns_pkt_rcode rcode);

// A response packet for `query` with its id and question, QR and RA set, RD
// copied, EDNS echoed when the guest used it; no records.
absl::StatusOr<LdnsPkt> NewResponse(const GuestQuery& query, ldns_pkt_rcode rcode);

}  // namespace forkd::dns
