#include "forkd/daemon/metrics.h"

#include <chrono>

#include "forkd/dns/address_class.h"

namespace forkd::daemon {

namespace {
const prometheus::Histogram::BucketBoundaries& Buckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
  return b;
}
// Counters sampled from totals: add what grew since the last sample.
void Advance(prometheus::Counter& c, uint64_t now, uint64_t& seen) {
  if (now > seen) c.Increment(static_cast<double>(now - seen));
  seen = now;
}

}  // namespace

Metrics::Metrics(pipeline::Node& node)
    : node_(node), registry_(std::make_shared<prometheus::Registry>()) {
  stages_ = &prometheus::BuildHistogram()
                 .Name("forkd_fork_stage_seconds")
                 .Help("Fork pipeline latency by stage")
                 .Register(*registry_);
  reaps_ = &prometheus::BuildCounter()
                .Name("forkd_reaps_total")
                .Help("Reaped forks by cause")
                .Register(*registry_);
  pool_ = &prometheus::BuildGauge()
               .Name("forkd_standby_pool")
               .Help("Standby forks ready per template")
               .Register(*registry_);
  live_ = &prometheus::BuildGauge()
               .Name("forkd_live_sandboxes")
               .Help("Ready sandboxes")
               .Register(*registry_)
               .Add({});
  pss_ = &prometheus::BuildGauge()
              .Name("forkd_sandboxes_pss_bytes")
              .Help("Sum of the VMMs' proportional set size (CoW-aware)")
              .Register(*registry_)
              .Add({});
  avail_ = &prometheus::BuildGauge()
                .Name("forkd_memory_available_bytes")
                .Help("Host MemAvailable")
                .Register(*registry_)
                .Add({});
  dns_ = &prometheus::BuildCounter()
              .Name("forkd_dns_total")
              .Help(
                  "Sandbox DNS proxies: guest queries and what became of them, pins, upstream "
                  "failures (forkd/dns/README.md lists the events)")
              .Register(*registry_);
  dns_stripped_ = &prometheus::BuildCounter()
                       .Name("forkd_dns_stripped_total")
                       .Help("Answer records the sandbox DNS proxies removed, by reason")
                       .Register(*registry_);
  dns_proxies_ = &prometheus::BuildGauge()
                      .Name("forkd_dns_proxies")
                      .Help("Sandbox DNS proxies serving")
                      .Register(*registry_)
                      .Add({});
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Start(const std::string& listen,
                                                        pipeline::Node& node) {
  std::unique_ptr<Metrics> m(new Metrics(node));
  try {
    m->exposer_ = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError("--metrics-listen " + listen + ": " + e.what());
  }
  m->exposer_->RegisterCollectable(m->registry_);
  node.SetObserver(m.get());
  m->sampler_ = std::thread([p = m.get()] {
    while (!p->stop_) {
      p->Sample();
      for (int i = 0; i < 10 && !p->stop_; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  return m;
}

Metrics::~Metrics() {
  node_.SetObserver(nullptr);
  stop_ = true;
  if (sampler_.joinable()) sampler_.join();
}

void Metrics::Sample() {
  const v1::Capacity c = node_.GetCapacity();
  live_->Set(c.live_sandboxes());
  pss_->Set(static_cast<double>(c.sandboxes_pss_bytes()));
  avail_->Set(static_cast<double>(c.memory_available_bytes()));
  for (const auto& p : c.standby()) pool_->Add({{"template", p.template_id()}}).Set(p.ready());
  uint32_t proxies = 0;
  const dns::ProxyMetrics d = node_.DnsMetrics(&proxies);
  dns_proxies_->Set(proxies);
  const std::pair<const char*, uint64_t dns::ProxyMetrics::*> events[] = {
      {"queries", &dns::ProxyMetrics::queries},
      {"malformed_queries", &dns::ProxyMetrics::malformed_queries},
      {"refused", &dns::ProxyMetrics::refused},
      {"forwarded", &dns::ProxyMetrics::forwarded},
      {"answered", &dns::ProxyMetrics::answered},
      {"servfail", &dns::ProxyMetrics::servfail},
      {"overloaded", &dns::ProxyMetrics::overloaded},
      {"pins", &dns::ProxyMetrics::pins},
      {"pin_failures", &dns::ProxyMetrics::pin_failures},
      {"upstream_timeouts", &dns::ProxyMetrics::upstream_timeouts},
      {"upstream_errors", &dns::ProxyMetrics::upstream_errors},
      {"malformed_answers", &dns::ProxyMetrics::malformed_answers},
      {"tcp_fallbacks", &dns::ProxyMetrics::tcp_fallbacks},
      {"send_errors", &dns::ProxyMetrics::send_errors}};
  for (const auto& [name, field] : events) {
    Advance(dns_->Add({{"event", name}}), d.*field, dns_seen_.*field);
  }
  const std::pair<const char*, uint64_t dns::ProxyMetrics::*> sections[] = {
      {"off_chain", &dns::ProxyMetrics::stripped_off_chain},
      {"other_sections", &dns::ProxyMetrics::stripped_other_sections},
      {"too_large", &dns::ProxyMetrics::stripped_too_large}};
  for (const auto& [name, field] : sections) {
    Advance(dns_stripped_->Add({{"reason", name}}), d.*field, dns_seen_.*field);
  }
  for (int i = 1; i < dns::kAddressClassCount; i++) {  // 0 is kPublic: never stripped
    const std::string_view name = dns::ToString(static_cast<dns::AddressClass>(i));
    Advance(dns_stripped_->Add({{"reason", std::string(name)}}), d.stripped_by_class[i],
            dns_seen_.stripped_by_class[i]);
  }
}

void Metrics::ForkDone(const v1::StageTimings& t) {
  const std::pair<const char*, uint64_t> stages[] = {
      {"journal", t.journal_us()}, {"netns", t.netns_us()},     {"tap", t.tap_us()},
      {"chains", t.chains_us()},   {"restore", t.restore_us()}, {"gate", t.gate_us()},
      {"total", t.total_us()}};
  for (const auto& [name, us] : stages) {
    stages_->Add({{"stage", name}, {"standby", t.from_standby() ? "true" : "false"}}, Buckets())
        .Observe(static_cast<double>(us) / 1e6);
  }
}

void Metrics::Reaped(const std::string& cause) {
  // A bounded label: the cause up to its detail ("gate: kNoAnswer", "vmm killed by signal 9").
  size_t cut = cause.find(':', cause.rfind("gate: ", 0) == 0 ? 6 : 0);
  reaps_->Add({{"cause", cause.substr(0, std::min<size_t>(cut, 48))}}).Increment();
}

}  // namespace forkd::daemon
