// Single owners for ldns objects (common/c_ptr.h), and the one place a packet
// becomes wire bytes.
#pragma once

// ldns/common.h defines the macros `bool`, `true` and `false` unless
// <stdbool.h> came first; in C++ those macros break the standard library.
// clang-format off
#include <stdbool.h>  // NOLINT(modernize-deprecated-headers): must precede ldns
#include <ldns/ldns.h>
// clang-format on

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/status/statusor.h"
#include "common/c_ptr.h"

namespace forkd::dns {

using LdnsPkt = CPtr<ldns_pkt, ldns_pkt_free>;
using LdnsRr = CPtr<ldns_rr, ldns_rr_free>;
using LdnsRdf = CPtr<ldns_rdf, ldns_rdf_deep_free>;

// Serializes `pkt` (ldns allocates with malloc; the copy is freed here).
absl::StatusOr<std::vector<uint8_t>> ToWire(const ldns_pkt* pkt);

// Parses wire bytes into a packet; InvalidArgument with ldns' reason.
absl::StatusOr<LdnsPkt> FromWire(const uint8_t* data, size_t size);

}  // namespace forkd::dns
