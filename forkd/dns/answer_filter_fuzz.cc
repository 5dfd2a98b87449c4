// libFuzzer target for the answer filter: the input is an upstream response.
// The filter may refuse it; whatever it releases must hold the filter's
// promises, checked here and trapped on:
//  - the answer parses, carries the guest's id, fits the guest's UDP size and
//    has no authority or additional records;
//  - every A/AAAA in it is public and pinned; every pin is public, distinct,
//    and lasts between min_pin and max(max_ttl, min_pin).
// Build: see CMakeLists.txt (FORKD_FUZZ); the normal build runs this entry
// over fuzz_corpus/ in dns_answer_filter_fuzz_regression_test.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "forkd/dns/answer_filter.h"
#include "forkd/dns/test_messages.h"

namespace {

using namespace forkd::dns;

constexpr uint16_t kGuestId = 0x4242;

const std::vector<GuestQuery>& Queries() {
  static const std::vector<GuestQuery>* queries = [] {
    auto* v = new std::vector<GuestQuery>();
    for (ldns_rr_type type : {LDNS_RR_TYPE_A, LDNS_RR_TYPE_AAAA}) {
      for (bool edns : {false, true}) {
        auto q = ParseQuery(testing::MakeQuery("www.example.com", type, kGuestId, edns));
        if (!q.ok()) __builtin_trap();
        v->push_back(std::move(*q));
      }
    }
    return v;
  }();
  return *queries;
}

void Check(const GuestQuery& query, const FilteredAnswer& out, const FilterLimits& limits) {
  if (out.kind != FilteredAnswer::Kind::kAnswer) {
    if (!out.wire.empty() || !out.pins.empty()) __builtin_trap();
    return;
  }
  if (out.wire.size() > query.max_udp_payload) __builtin_trap();
  auto pkt = FromWire(out.wire.data(), out.wire.size());
  if (!pkt.ok()) __builtin_trap();
  if (ldns_pkt_id(pkt->get()) != kGuestId || !ldns_pkt_qr(pkt->get())) __builtin_trap();
  if (ldns_pkt_nscount(pkt->get()) != 0 || ldns_pkt_arcount(pkt->get()) != 0) __builtin_trap();
  const auto longest = std::max(std::chrono::seconds(limits.max_ttl), limits.min_pin);
  for (size_t i = 0; i < out.pins.size(); ++i) {
    if (Classify(out.pins[i].address) != AddressClass::kPublic) __builtin_trap();
    if (out.pins[i].duration < limits.min_pin || out.pins[i].duration > longest) __builtin_trap();
    for (size_t j = i + 1; j < out.pins.size(); ++j) {
      if (out.pins[i].address == out.pins[j].address) __builtin_trap();
    }
  }
  const ldns_rr_list* answers = ldns_pkt_answer(pkt->get());
  for (size_t i = 0; i < ldns_rr_list_rr_count(answers); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(answers, i);
    const ldns_rr_type t = ldns_rr_get_type(rr);
    if (t == LDNS_RR_TYPE_CNAME) continue;
    if (t != query.type) __builtin_trap();  // nothing but the chain and the asked type
    const ldns_rdf* rd = ldns_rr_rdf(rr, 0);
    forkd::netfilter::IpAddress a;
    a.family = t == LDNS_RR_TYPE_A ? forkd::netfilter::Family::kV4 : forkd::netfilter::Family::kV6;
    if (rd == nullptr || ldns_rdf_size(rd) != a.size()) __builtin_trap();
    std::memcpy(a.bytes.data(), ldns_rdf_data(rd), a.size());
    if (Classify(a) != AddressClass::kPublic) __builtin_trap();
    if (std::none_of(out.pins.begin(), out.pins.end(),
                     [&](const AddressPin& p) { return p.address == a; })) {
      __builtin_trap();  // released without a pin
    }
    if (ldns_rr_ttl(rr) > limits.max_ttl) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // The message's own id is the one "sent", so inputs get past the id check.
  const uint16_t id = static_cast<uint16_t>((data[0] << 8) | data[1]);
  // The id's low bits pick the question: A or AAAA, with or without EDNS.
  const GuestQuery& query = Queries()[data[1] & 3];
  const FilterLimits limits{.min_pin = std::chrono::seconds(30), .max_ttl = 3600};
  auto out = FilterAnswer(query, id, std::span<const uint8_t>(data, size), limits);
  if (out.ok()) Check(query, *out, limits);
  return 0;
}
