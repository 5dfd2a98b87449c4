#include "forkd/dns/proxy_config.h"

#include "forkd/dns/name_allowlist.h"

namespace forkd::dns {

absl::Status Validate(const ProxyConfig& config) {
  if (config.listen_port == 0) return absl::InvalidArgumentError("dns proxy: listen port 0");
  if (config.upstream_port == 0) return absl::InvalidArgumentError("dns proxy: upstream port 0");
  if (config.upstream_timeout <= std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError("dns proxy: upstream_timeout must be positive");
  }
  if (config.max_outstanding == 0) {
    return absl::InvalidArgumentError("dns proxy: max_outstanding must be at least 1");
  }
  if (config.limits.min_pin <= std::chrono::seconds(0)) {
    return absl::InvalidArgumentError("dns proxy: limits.min_pin must be positive");
  }
  auto allowlist = NameAllowlist::Create(config.allowlist);
  if (!allowlist.ok()) return allowlist.status();
  return absl::OkStatus();
}

}  // namespace forkd::dns
