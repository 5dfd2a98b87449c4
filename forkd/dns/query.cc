#include "forkd/dns/query.h"

#include <algorithm>

namespace forkd::dns {

absl::StatusOr<GuestQuery> ParseQuery(std::span<const uint8_t> datagram) {
  auto pkt = FromWire(datagram.data(), datagram.size());
  if (!pkt.ok()) return pkt.status();
  GuestQuery q;
  q.packet = std::move(*pkt);
  const ldns_pkt* p = q.packet.get();
  if (ldns_pkt_qr(p)) return absl::InvalidArgumentError("not a query: QR is set");
  if (ldns_pkt_get_opcode(p) != LDNS_PACKET_QUERY) {
    return absl::InvalidArgumentError("opcode is not QUERY");
  }
  const ldns_rr_list* questions = ldns_pkt_question(p);
  if (questions == nullptr || ldns_rr_list_rr_count(questions) != 1) {
    return absl::InvalidArgumentError("query must carry exactly one question");
  }
  q.question = ldns_rr_list_rr(questions, 0);
  const ldns_rdf* owner = ldns_rr_owner(q.question);
  if (owner == nullptr || ldns_rdf_get_type(owner) != LDNS_RDF_TYPE_DNAME) {
    return absl::InvalidArgumentError("question without a name");
  }
  auto labels = WireNameLabels(ldns_rdf_data(owner), ldns_rdf_size(owner));
  if (!labels.ok()) return labels.status();
  q.name = std::move(*labels);
  q.type = ldns_rr_get_type(q.question);
  q.klass = ldns_rr_get_class(q.question);
  q.id = ldns_pkt_id(p);
  if (ldns_pkt_edns(p)) {
    q.max_udp_payload =
        std::clamp<uint16_t>(ldns_pkt_edns_udp_size(p), kClassicUdpPayload, kMaxUdpPayload);
  }
  return q;
}

bool ShouldForward(const GuestQuery& query, const NameAllowlist& allowlist) {
  if (query.klass != LDNS_RR_CLASS_IN) return false;
  if (query.type != LDNS_RR_TYPE_A && query.type != LDNS_RR_TYPE_AAAA) return false;
  return allowlist.Allows(query.name);
}

absl::StatusOr<std::vector<uint8_t>> BuildUpstreamQuery(const GuestQuery& query,
                                                        uint16_t upstream_id) {
  LdnsPkt pkt(ldns_pkt_new());
  if (!pkt) return absl::ResourceExhaustedError("ldns_pkt_new");
  ldns_pkt_set_id(pkt.get(), upstream_id);
  ldns_pkt_set_opcode(pkt.get(), LDNS_PACKET_QUERY);
  ldns_pkt_set_rd(pkt.get(), true);
  ldns_rr* question = ldns_rr_clone(query.question);
  if (question == nullptr) return absl::ResourceExhaustedError("ldns_rr_clone");
  if (!ldns_pkt_push_rr(pkt.get(), LDNS_SECTION_QUESTION, question)) {
    ldns_rr_free(question);
    return absl::ResourceExhaustedError("ldns_pkt_push_rr");
  }
  ldns_pkt_set_edns_udp_size(pkt.get(), kMaxUdpPayload);
  return ToWire(pkt.get());
}

absl::StatusOr<LdnsPkt> NewResponse(const GuestQuery& query, ldns_pkt_rcode rcode) {
  LdnsPkt pkt(ldns_pkt_new());
  if (!pkt) return absl::ResourceExhaustedError("ldns_pkt_new");
  const ldns_pkt* guest = query.packet.get();
  ldns_pkt_set_id(pkt.get(), query.id);
  ldns_pkt_set_qr(pkt.get(), true);
  ldns_pkt_set_opcode(pkt.get(), LDNS_PACKET_QUERY);
  ldns_pkt_set_rd(pkt.get(), ldns_pkt_rd(guest));
  ldns_pkt_set_ra(pkt.get(), true);
  ldns_pkt_set_rcode(pkt.get(), static_cast<uint8_t>(rcode));
  ldns_rr* question = ldns_rr_clone(query.question);
  if (question == nullptr) return absl::ResourceExhaustedError("ldns_rr_clone");
  if (!ldns_pkt_push_rr(pkt.get(), LDNS_SECTION_QUESTION, question)) {
    ldns_rr_free(question);
    return absl::ResourceExhaustedError("ldns_pkt_push_rr");
  }
  if (ldns_pkt_edns(guest)) ldns_pkt_set_edns_udp_size(pkt.get(), kMaxUdpPayload);
  return pkt;
}

absl::StatusOr<std::vector<uint8_t>> BuildErrorAnswer(const GuestQuery& query,
                                                      ldns_pkt_rcode rcode) {
  auto pkt = NewResponse(query, rcode);
  if (!pkt.ok()) return pkt.status();
  return ToWire(pkt->get());
}

}  // namespace forkd::dns
