#include "forkd/dns/test_messages.h"

#include <cstdio>
#include <cstdlib>

namespace forkd::dns::testing {
namespace {

[[noreturn]] void Die(const std::string& what) {
  (void)std::fprintf(stderr, "test_messages: %s\n", what.c_str());
  std::abort();
}

void Push(ldns_pkt* pkt, ldns_pkt_section section, const std::string& text) {
  ldns_rr* rr = nullptr;
  if (ldns_rr_new_frm_str(&rr, text.c_str(), 0, nullptr, nullptr) != LDNS_STATUS_OK) {
    Die("bad record: " + text);
  }
  ldns_pkt_push_rr(pkt, section, rr);
}

}  // namespace

std::vector<uint8_t> MakeQuery(const std::string& name, ldns_rr_type type, uint16_t id, bool edns) {
  ldns_rdf* owner = ldns_dname_new_frm_str(name.c_str());
  if (owner == nullptr) Die("bad name: " + name);
  LdnsPkt pkt(ldns_pkt_query_new(owner, type, LDNS_RR_CLASS_IN, LDNS_RD));
  ldns_pkt_set_id(pkt.get(), id);
  if (edns) ldns_pkt_set_edns_udp_size(pkt.get(), 1232);
  auto wire = ToWire(pkt.get());
  if (!wire.ok()) Die(std::string(wire.status().message()));
  return *wire;
}

std::vector<uint8_t> MakeResponse(const std::vector<uint8_t>& query, const ResponseSpec& spec) {
  auto q = FromWire(query.data(), query.size());
  if (!q.ok()) Die("query does not parse");
  LdnsPkt pkt(ldns_pkt_new());
  ldns_pkt_set_id(pkt.get(), ldns_pkt_id(q->get()));
  ldns_pkt_set_qr(pkt.get(), true);
  ldns_pkt_set_rd(pkt.get(), true);
  ldns_pkt_set_ra(pkt.get(), true);
  ldns_pkt_set_tc(pkt.get(), spec.truncated);
  ldns_pkt_set_rcode(pkt.get(), static_cast<uint8_t>(spec.rcode));
  const ldns_rr_list* questions = ldns_pkt_question(q->get());
  for (size_t i = 0; i < ldns_rr_list_rr_count(questions); ++i) {
    ldns_pkt_push_rr(pkt.get(), LDNS_SECTION_QUESTION,
                     ldns_rr_clone(ldns_rr_list_rr(questions, i)));
  }
  for (const std::string& rr : spec.answer) Push(pkt.get(), LDNS_SECTION_ANSWER, rr);
  for (const std::string& rr : spec.additional) Push(pkt.get(), LDNS_SECTION_ADDITIONAL, rr);
  auto wire = ToWire(pkt.get());
  if (!wire.ok()) Die(std::string(wire.status().message()));
  return *wire;
}

std::vector<std::string> AnswerRecords(const std::vector<uint8_t>& wire) {
  std::vector<std::string> out;
  auto pkt = FromWire(wire.data(), wire.size());
  if (!pkt.ok()) return out;
  const ldns_rr_list* answers = ldns_pkt_answer(pkt->get());
  for (size_t i = 0; i < ldns_rr_list_rr_count(answers); ++i) {
    char* text = ldns_rr2str(ldns_rr_list_rr(answers, i));
    std::string s = text == nullptr ? "" : text;
    std::free(text);
    while (!s.empty() && (s.back() == '\n')) s.pop_back();
    // Tabs to single spaces: "a.example.com. 30 IN A 1.2.3.4".
    for (char& c : s) {
      if (c == '\t') c = ' ';
    }
    out.push_back(s);
  }
  return out;
}

int Rcode(const std::vector<uint8_t>& wire) {
  auto pkt = FromWire(wire.data(), wire.size());
  if (!pkt.ok()) return -1;
  return ldns_pkt_get_rcode(pkt->get());
}

}  // namespace forkd::dns::testing
