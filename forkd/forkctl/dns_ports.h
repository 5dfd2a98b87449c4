// forkctl fork --dns-port: the ports (TCP and UDP) the addresses released
// for --allow-dns names are pinned with (EgressPolicy.dns_ports in
// forkd/api/forkd.proto; forkd's default when none is given: 443 and 80).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace forkd::forkctl {

// Each value is a port or a comma-separated list of ports, decimal 1-65535
// (the flag is repeatable). INVALID_ARGUMENT naming the offending item
// otherwise. Duplicates are kept once, in first-seen order.
absl::StatusOr<std::vector<uint32_t>> ParseDnsPorts(const std::vector<std::string>& values);

}  // namespace forkd::forkctl
