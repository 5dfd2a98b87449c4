#include "forkd/dns/ldns_ptr.h"

#include <string>

namespace forkd::dns {
namespace {
void FreeWire(uint8_t* p) { std::free(p); }
}  // namespace

absl::StatusOr<std::vector<uint8_t>> ToWire(const ldns_pkt* pkt) {
  uint8_t* raw = nullptr;
  size_t size = 0;
  const ldns_status s = ldns_pkt2wire(&raw, pkt, &size);
  const CPtr<uint8_t, FreeWire> owned(raw);
  if (s != LDNS_STATUS_OK) {
    return absl::InternalError(std::string("ldns_pkt2wire: ") + ldns_get_errorstr_by_id(s));
  }
  return std::vector<uint8_t>(raw, raw + size);
}

absl::StatusOr<LdnsPkt> FromWire(const uint8_t* data, size_t size) {
  ldns_pkt* raw = nullptr;
  const ldns_status s = ldns_wire2pkt(&raw, data, size);
  LdnsPkt pkt(raw);
  if (s != LDNS_STATUS_OK) {
    return absl::InvalidArgumentError(std::string("malformed DNS message: ") +
                                      ldns_get_errorstr_by_id(s));
  }
  if (!pkt) return absl::InvalidArgumentError("malformed DNS message");
  return pkt;
}

}  // namespace forkd::dns
