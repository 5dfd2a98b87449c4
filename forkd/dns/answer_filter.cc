#include "forkd/dns/answer_filter.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "common/errno_status.h"

namespace forkd::dns {
namespace {

using netfilter::Family;
using netfilter::IpAddress;

// A chain longer than this is refused by resolvers too (BIND stops at 16).
constexpr int kMaxChain = 16;

std::optional<Labels> OwnerLabels(const ldns_rr* rr) {
  const ldns_rdf* owner = ldns_rr_owner(rr);
  if (owner == nullptr || ldns_rdf_get_type(owner) != LDNS_RDF_TYPE_DNAME) return std::nullopt;
  auto labels = WireNameLabels(ldns_rdf_data(owner), ldns_rdf_size(owner));
  if (!labels.ok()) return std::nullopt;
  return std::move(*labels);
}

std::optional<Labels> CnameTarget(const ldns_rr* rr) {
  if (ldns_rr_rd_count(rr) != 1) return std::nullopt;
  const ldns_rdf* target = ldns_rr_rdf(rr, 0);
  if (target == nullptr || ldns_rdf_get_type(target) != LDNS_RDF_TYPE_DNAME) return std::nullopt;
  auto labels = WireNameLabels(ldns_rdf_data(target), ldns_rdf_size(target));
  if (!labels.ok()) return std::nullopt;
  return std::move(*labels);
}

std::optional<IpAddress> RecordAddress(const ldns_rr* rr) {
  if (ldns_rr_rd_count(rr) != 1) return std::nullopt;
  const ldns_rdf* rd = ldns_rr_rdf(rr, 0);
  if (rd == nullptr) return std::nullopt;
  IpAddress a;
  if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_A && ldns_rdf_size(rd) == 4) {
    a.family = Family::kV4;
  } else if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_AAAA && ldns_rdf_size(rd) == 16) {
    a.family = Family::kV6;
  } else {
    return std::nullopt;
  }
  std::memcpy(a.bytes.data(), ldns_rdf_data(rd), a.size());
  return a;
}

bool SameQuestion(const GuestQuery& query, const ldns_pkt* response) {
  const ldns_rr_list* questions = ldns_pkt_question(response);
  if (questions == nullptr || ldns_rr_list_rr_count(questions) != 1) return false;
  const ldns_rr* q = ldns_rr_list_rr(questions, 0);
  if (ldns_rr_get_type(q) != query.type || ldns_rr_get_class(q) != query.klass) return false;
  const auto name = OwnerLabels(q);
  return name.has_value() && *name == query.name;
}

// Pushes a copy of `rr` with its TTL capped into the answer section.
absl::Status PushAnswer(ldns_pkt* pkt, const ldns_rr* rr, uint32_t ttl) {
  ldns_rr* copy = ldns_rr_clone(rr);
  if (copy == nullptr) return absl::ResourceExhaustedError("ldns_rr_clone");
  ldns_rr_set_ttl(copy, ttl);
  if (!ldns_pkt_push_rr(pkt, LDNS_SECTION_ANSWER, copy)) {
    ldns_rr_free(copy);
    return absl::ResourceExhaustedError("ldns_pkt_push_rr");
  }
  return absl::OkStatus();
}

struct Kept {
  const ldns_rr* rr;
  uint32_t ttl;
  std::optional<IpAddress> address;  // set for address records
};

}  // namespace

absl::StatusOr<FilteredAnswer> FilterAnswer(const GuestQuery& query, uint16_t upstream_id,
                                            std::span<const uint8_t> upstream,
                                            const FilterLimits& limits) {
  auto parsed = FromWire(upstream.data(), upstream.size());
  if (!parsed.ok()) return parsed.status();
  const ldns_pkt* response = parsed->get();
  if (!ldns_pkt_qr(response) || ldns_pkt_get_opcode(response) != LDNS_PACKET_QUERY) {
    return absl::InvalidArgumentError("upstream message is not a response to a query");
  }
  if (ldns_pkt_id(response) != upstream_id) {
    return absl::InvalidArgumentError("upstream response id does not match the query");
  }
  if (!SameQuestion(query, response)) {
    return absl::InvalidArgumentError("upstream response is for another question");
  }

  FilteredAnswer out;
  out.upstream_rcode = ldns_pkt_get_rcode(response);
  if (ldns_pkt_tc(response)) {
    out.kind = FilteredAnswer::Kind::kTruncated;
    return out;
  }
  if (out.upstream_rcode != LDNS_RCODE_NOERROR && out.upstream_rcode != LDNS_RCODE_NXDOMAIN) {
    out.kind = FilteredAnswer::Kind::kUpstreamError;
    return out;
  }
  out.stripped.other_sections = ldns_pkt_nscount(response) + ldns_pkt_arcount(response);

  // Walk the chain: each step takes the first CNAME owned by the current name.
  const ldns_rr_list* answers = ldns_pkt_answer(response);
  const size_t count = answers == nullptr ? 0 : ldns_rr_list_rr_count(answers);
  std::vector<bool> used(count, false);
  std::vector<Kept> kept;
  Labels current = query.name;
  std::vector<Labels> seen = {current};
  bool broken_chain = false;  // a loop or an over-long chain: no name to take addresses from
  for (int hop = 0;; ++hop) {
    if (hop == kMaxChain) {
      broken_chain = true;
      break;
    }
    bool advanced = false;
    for (size_t i = 0; i < count && !advanced; ++i) {
      const ldns_rr* rr = ldns_rr_list_rr(answers, i);
      if (used[i] || ldns_rr_get_type(rr) != LDNS_RR_TYPE_CNAME ||
          ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN) {
        continue;
      }
      const auto owner = OwnerLabels(rr);
      if (!owner || *owner != current) continue;
      const auto target = CnameTarget(rr);
      if (!target) continue;
      used[i] = true;
      kept.push_back({rr, std::min(ldns_rr_ttl(rr), limits.max_ttl), std::nullopt});
      current = *target;
      advanced = true;
    }
    if (!advanced) break;
    if (std::find(seen.begin(), seen.end(), current) != seen.end()) {
      broken_chain = true;
      break;
    }
    seen.push_back(current);
  }
  for (size_t i = 0; i < count; ++i) {
    if (used[i]) continue;
    const ldns_rr* rr = ldns_rr_list_rr(answers, i);
    const auto owner = OwnerLabels(rr);
    if (broken_chain || ldns_rr_get_type(rr) != query.type ||
        ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN || !owner || *owner != current) {
      ++out.stripped.off_chain;
      continue;
    }
    const auto address = RecordAddress(rr);
    if (!address) {
      ++out.stripped.off_chain;
      continue;
    }
    const AddressClass c = Classify(*address);
    if (c != AddressClass::kPublic) {
      ++out.stripped.by_class[static_cast<int>(c)];
      continue;
    }
    used[i] = true;
    kept.push_back({rr, std::min(ldns_rr_ttl(rr), limits.max_ttl), address});
  }

  // Build. When the answer does not fit the guest's UDP size, leave out
  // trailing addresses (a subset of an RRset is a valid answer; TC would make
  // the guest retry over TCP, which the proxy does not serve). The chain comes
  // first in `kept`; the largest address count that fits is found by
  // bisection, so a huge answer costs a few builds, not one per record.
  const size_t chain = static_cast<size_t>(
      std::count_if(kept.begin(), kept.end(), [](const Kept& k) { return !k.address; }));
  auto build = [&](size_t addresses) -> absl::StatusOr<std::vector<uint8_t>> {
    auto pkt = NewResponse(query, out.upstream_rcode);
    if (!pkt.ok()) return pkt.status();
    for (size_t i = 0; i < chain + addresses; ++i) {
      FORKD_RETURN_IF_ERROR(PushAnswer(pkt->get(), kept[i].rr, kept[i].ttl));
    }
    return ToWire(pkt->get());
  };
  const size_t all = kept.size() - chain;
  FORKD_ASSIGN_OR_RETURN(std::vector<uint8_t> wire, build(all));
  if (wire.size() > query.max_udp_payload) {
    size_t fits = 0;  // invariant: `fits` addresses fit, `too_many` do not
    size_t too_many = all;
    while (too_many - fits > 1) {
      const size_t mid = fits + (too_many - fits) / 2;
      FORKD_ASSIGN_OR_RETURN(std::vector<uint8_t> attempt, build(mid));
      (attempt.size() <= query.max_udp_payload ? fits : too_many) = mid;
    }
    FORKD_ASSIGN_OR_RETURN(wire, build(fits));
    if (wire.size() > query.max_udp_payload) {
      return absl::ResourceExhaustedError(
          "the CNAME chain alone does not fit the guest's UDP size");
    }
    out.stripped.too_large = all - fits;
    kept.resize(chain + fits);
  }
  out.wire = std::move(wire);
  for (const Kept& k : kept) {
    if (!k.address) continue;
    const std::chrono::seconds duration = std::max(std::chrono::seconds(k.ttl), limits.min_pin);
    auto same = std::find_if(out.pins.begin(), out.pins.end(),
                             [&](const AddressPin& p) { return p.address == *k.address; });
    if (same == out.pins.end()) {
      out.pins.push_back({*k.address, duration});
    } else {
      same->duration = std::max(same->duration, duration);
    }
  }
  return out;
}

}  // namespace forkd::dns
