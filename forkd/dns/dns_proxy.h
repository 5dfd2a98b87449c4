// One sandbox's DNS proxy: a UDP socket at the sandbox's resolver address,
// inside the sandbox's network namespace, served by one thread of its own
// (README.md argues the thread-per-proxy choice).
//
// For each guest query: parse (malformed: drop and count) -> allowlist
// (no: REFUSED) -> upstream over UDP, TCP if truncated, bounded by
// upstream_timeout and max_outstanding -> answer filter -> pin every released
// address -> only then send the answer. A failed pin answers SERVFAIL.
#pragma once

#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/dns/pinner.h"
#include "forkd/dns/proxy_config.h"
#include "forkd/dns/proxy_metrics.h"

namespace forkd::dns {

class DnsProxy {
 public:
  // Validates `config`, starts the thread, enters the namespace and binds the
  // socket there; returns once the proxy is serving, or the first error.
  static absl::StatusOr<std::unique_ptr<DnsProxy>> Start(const ProxyConfig& config,
                                                         std::unique_ptr<Pinner> pinner);

  DnsProxy(const DnsProxy&) = delete;
  DnsProxy& operator=(const DnsProxy&) = delete;
  // Stops the thread; queries still waiting upstream get no answer.
  ~DnsProxy();

  // Stops serving and closes every socket; idempotent. Returns the error that
  // ended the loop early, if one did (the loop never stops silently).
  absl::Status Stop();

  ProxyMetrics Metrics() const;

 private:
  class Loop;
  DnsProxy() = default;

  UniqueFd stop_event_;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
  mutable std::mutex mu_;
  ProxyMetrics metrics_;      // guarded by mu_, written by the loop
  absl::Status loop_status_;  // guarded by mu_
};

}  // namespace forkd::dns
