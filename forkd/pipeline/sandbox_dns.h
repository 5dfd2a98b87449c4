// The DNS side of a sandbox (forkd/dns runs it): which names and ports a
// spec asks for, the upstream forkd forwards to (--dns-upstream), and the
// proxy forkd starts for the sandbox at the host side of its tap, inside its
// namespace, before the VMM is restored (the guest never sees a resolver
// that is not there yet), and stops before the tap goes.
//
// One proxy (one thread, blocked in epoll_wait) per sandbox that names DNS
// names; forkd/daemon/README.md argues that choice against one event loop.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/api/forkd.pb.h"
#include "forkd/dns/dns_proxy.h"
#include "forkd/dns/proxy_metrics.h"
#include "netfilter/ip.h"

namespace forkd::pipeline {

// Where every sandbox's proxy forwards allowlisted questions; reached from
// the sandbox's namespace (README: the pod's own network and DNS).
struct DnsUpstream {
  netfilter::IpAddress address;
  uint16_t port = 53;
  std::string ToString() const;  // "10.96.0.10:53", "[2001:db8::53]:53"
};

// "10.96.0.10:53", "[fd00::53]:53", or an address alone (port 53). The host
// must be an IP address: forkd resolves nothing itself.
absl::StatusOr<DnsUpstream> ParseDnsUpstream(const std::string& text);

// Ports a released address is pinned with when the spec names none.
inline constexpr uint16_t kDefaultDnsPorts[] = {443, 80};
inline constexpr int kMaxDnsPorts = 16;
inline constexpr int kMaxDnsNames = 256;

// Checks egress.allow_dns and egress.dns_ports: names must be valid
// allow-list patterns (INVALID_ARGUMENT naming the entry), ports 1..65535,
// unique, at most kMaxDnsPorts; and names need an upstream
// (FAILED_PRECONDITION saying so when forkd runs without --dns-upstream).
absl::Status ValidateDns(const v1::SandboxSpec& spec, const std::string& where, bool have_upstream);

// The names and the pin ports of a validated spec (ports defaulted).
std::vector<std::string> DnsNamesOf(const v1::SandboxSpec& spec);
std::vector<uint16_t> DnsPortsOf(const v1::SandboxSpec& spec);

// Starts the proxy of one sandbox: bound at `resolver`:53 (an address of the
// tap, which must exist and be up) inside `netns_fd`, pinning into `tap`'s
// sets (installed with `shards`). Returns once it serves, or the error with
// the tap named.
absl::StatusOr<std::unique_ptr<dns::DnsProxy>> StartSandboxDns(
    int netns_fd, const std::string& tap, uint32_t shards, const netfilter::IpAddress& resolver,
    const DnsUpstream& upstream, const std::vector<std::string>& names,
    const std::vector<uint16_t>& ports);

}  // namespace forkd::pipeline
