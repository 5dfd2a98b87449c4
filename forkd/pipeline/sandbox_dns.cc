#include "forkd/pipeline/sandbox_dns.h"

#include <set>

#include "common/errno_status.h"
#include "forkd/dns/name_allowlist.h"
#include "forkd/dns/pinner.h"
#include "forkd/sandbox/ids.h"

namespace forkd::pipeline {

std::string DnsUpstream::ToString() const {
  const std::string host = address.ToString();
  return (address.family == netfilter::Family::kV6 ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

absl::StatusOr<DnsUpstream> ParseDnsUpstream(const std::string& text) {
  std::string host = text;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos) {
      return absl::InvalidArgumentError("'" + text + "': no closing ] after the IPv6 address");
    }
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') {
        return absl::InvalidArgumentError("'" + text + "': expected :PORT after ]");
      }
      port = text.substr(close + 2);
    }
  } else if (const size_t colon = text.find(':');
             colon != std::string::npos && text.find(':', colon + 1) == std::string::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto address = netfilter::IpAddress::Parse(host);
  if (!address.ok()) {
    return absl::InvalidArgumentError("'" + text +
                                      "': the host must be an IPv4 or [IPv6] address: " +
                                      std::string(address.status().message()));
  }
  DnsUpstream out{.address = *address, .port = 53};
  if (!port.empty() || text.ends_with(":")) {
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos) {
      return absl::InvalidArgumentError("'" + text + "': port must be 1..65535");
    }
    const unsigned long n = std::stoul(port);
    if (n < 1 || n > 65535)
      return absl::InvalidArgumentError("'" + text + "': port must be 1..65535");
    out.port = static_cast<uint16_t>(n);
  }
  return out;
}

absl::Status ValidateDns(const v1::SandboxSpec& spec, const std::string& where,
                         bool have_upstream) {
  const auto& egress = spec.egress();
  if (egress.allow_dns_size() == 0) {
    if (egress.dns_ports_size() > 0) {
      return absl::InvalidArgumentError(where +
                                        ": egress.dns_ports given without egress.allow_dns");
    }
    return absl::OkStatus();
  }
  if (egress.allow_dns_size() > kMaxDnsNames) {
    return absl::InvalidArgumentError(where + ": more than " + std::to_string(kMaxDnsNames) +
                                      " names in egress.allow_dns");
  }
  for (int i = 0; i < egress.allow_dns_size(); i++) {
    if (auto a = dns::NameAllowlist::Create({egress.allow_dns(i)}); !a.ok()) {
      return absl::InvalidArgumentError(where + ": egress.allow_dns[" + std::to_string(i) + "] '" +
                                        sandbox::Printable(egress.allow_dns(i), 64) +
                                        "': " + std::string(a.status().message()));
    }
  }
  if (egress.dns_ports_size() > kMaxDnsPorts) {
    return absl::InvalidArgumentError(where + ": more than " + std::to_string(kMaxDnsPorts) +
                                      " egress.dns_ports");
  }
  std::set<uint32_t> seen;
  for (uint32_t p : egress.dns_ports()) {
    if (p < 1 || p > 65535) {
      return absl::InvalidArgumentError(where + ": egress.dns_ports: " + std::to_string(p) +
                                        " is not within 1..65535");
    }
    if (!seen.insert(p).second) {
      return absl::InvalidArgumentError(where + ": egress.dns_ports: " + std::to_string(p) +
                                        " is given twice");
    }
  }
  if (!have_upstream) {
    return absl::FailedPreconditionError(
        where + ": egress.allow_dns names " + std::to_string(egress.allow_dns_size()) +
        " DNS name(s), but this forkd runs without --dns-upstream: its DNS proxy would have "
        "nowhere to forward them; start forkd with --dns-upstream HOST:PORT (the resolver the "
        "sandboxes' namespaces reach) or leave allow_dns empty");
  }
  return absl::OkStatus();
}

std::vector<std::string> DnsNamesOf(const v1::SandboxSpec& spec) {
  return {spec.egress().allow_dns().begin(), spec.egress().allow_dns().end()};
}

std::vector<uint16_t> DnsPortsOf(const v1::SandboxSpec& spec) {
  if (spec.egress().dns_ports_size() == 0) {
    return {std::begin(kDefaultDnsPorts), std::end(kDefaultDnsPorts)};
  }
  std::vector<uint16_t> out;
  for (uint32_t p : spec.egress().dns_ports()) out.push_back(static_cast<uint16_t>(p));
  return out;
}

absl::StatusOr<std::unique_ptr<dns::DnsProxy>> StartSandboxDns(
    int netns_fd, const std::string& tap, uint32_t shards, const netfilter::IpAddress& resolver,
    const DnsUpstream& upstream, const std::vector<std::string>& names,
    const std::vector<uint16_t>& ports) {
  auto pinner = dns::NftPinner::Open(netns_fd, shards, tap, ports);
  if (!pinner.ok()) return Annotate(pinner.status(), "dns proxy of tap " + tap);
  dns::ProxyConfig config;
  config.netns_fd = netns_fd;
  config.listen_address = resolver;
  config.upstream_address = upstream.address;
  config.upstream_port = upstream.port;
  config.allowlist = names;
  auto proxy = dns::DnsProxy::Start(config, std::move(*pinner));
  if (!proxy.ok()) return Annotate(proxy.status(), "dns proxy of tap " + tap);
  return std::move(*proxy);
}

}  // namespace forkd::pipeline
