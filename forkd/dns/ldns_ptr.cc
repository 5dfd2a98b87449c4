#include "forkd/dns/ldns_ptr.h"

#include <string>

namespace forkd::dns {
namespace {
constexpr size_t kInitialWireBuffer = 1232;
}  // namespace

absl::StatusOr<std::vector<uint8_t>> ToWire(const ldns_pkt* pkt) {
  // ldns_pkt2wire() would allocate a 64 KiB buffer per message; this one
  // starts at a UDP answer's size and grows only for larger (TCP) messages.
  const CPtr<ldns_buffer, ldns_buffer_free> buffer(ldns_buffer_new(kInitialWireBuffer));
  if (!buffer) return absl::ResourceExhaustedError("ldns_buffer_new");
  const ldns_status s = ldns_pkt2buffer_wire(buffer.get(), pkt);
  if (s != LDNS_STATUS_OK) {
    return absl::InternalError(std::string("ldns_pkt2buffer_wire: ") + ldns_get_errorstr_by_id(s));
  }
  const uint8_t* data = ldns_buffer_begin(buffer.get());
  return std::vector<uint8_t>(data, data + ldns_buffer_position(buffer.get()));
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
