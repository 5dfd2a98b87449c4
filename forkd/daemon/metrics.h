// Prometheus metrics (prometheus-cpp) served on --metrics-listen:
//   forkd_fork_stage_seconds{stage}      per-stage fork latency histograms
//   forkd_reaps_total{cause}             reaps by cause
//   forkd_live_sandboxes, forkd_standby_pool{template},
//   forkd_sandboxes_pss_bytes, forkd_memory_available_bytes
//   forkd_dns_total{event}               the sandboxes' DNS proxies (forkd/dns)
//   forkd_dns_stripped_total{reason}     answer records removed, by reason
//   forkd_dns_proxies                    proxies serving now
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "forkd/pipeline/node.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace forkd::daemon {

class Metrics final : public pipeline::Node::Observer {
 public:
  // Throws nothing: a bind failure is returned by Start.
  static absl::StatusOr<std::unique_ptr<Metrics>> Start(const std::string& listen,
                                                        pipeline::Node& node);
  ~Metrics() override;

  void ForkDone(const v1::StageTimings& t) override;
  void Reaped(const std::string& cause) override;

 private:
  explicit Metrics(pipeline::Node& node);
  void Sample();

  pipeline::Node& node_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Histogram>* stages_;
  prometheus::Family<prometheus::Counter>* reaps_;
  prometheus::Family<prometheus::Gauge>* pool_;
  prometheus::Gauge* live_;
  prometheus::Gauge* pss_;
  prometheus::Gauge* avail_;
  prometheus::Family<prometheus::Counter>* dns_;
  prometheus::Family<prometheus::Counter>* dns_stripped_;
  prometheus::Gauge* dns_proxies_;
  dns::ProxyMetrics dns_seen_;  // what the counters hold (sampler thread only)
  std::atomic<bool> stop_{false};
  std::thread sampler_;
};

}  // namespace forkd::daemon
