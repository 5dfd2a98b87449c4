// What the daemon tells one sandbox's DNS proxy.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "forkd/dns/answer_filter.h"
#include "netfilter/ip.h"

namespace forkd::dns {

struct ProxyConfig {
  // The sandbox's network namespace (negative: the caller's). The proxy's
  // thread lives in it: the listening socket and every upstream socket are
  // opened there. Only used during Start(); the caller keeps ownership.
  int netns_fd = -1;
  // The resolver address the guest was given (it must be assigned in that
  // namespace, e.g. on the tap) and its port.
  netfilter::IpAddress listen_address;
  uint16_t listen_port = 53;
  // The recursive resolver answers come from, reached from that namespace.
  netfilter::IpAddress upstream_address;
  uint16_t upstream_port = 53;
  // Names the guest may resolve: "api.example.com", "*.example.com".
  std::vector<std::string> allowlist;
  FilterLimits limits;
  // An upstream exchange (UDP plus any TCP retry) that takes longer is
  // answered SERVFAIL.
  std::chrono::milliseconds upstream_timeout{2000};
  // Queries waiting for upstream at once; beyond it a query gets SERVFAIL at
  // once, so a guest cannot make the proxy hold unbounded state.
  size_t max_outstanding = 64;
};

absl::Status Validate(const ProxyConfig& config);

}  // namespace forkd::dns
