// Counters of one sandbox's DNS proxy (README.md lists them with meanings).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "forkd/dns/address_class.h"

namespace forkd::dns {

struct ProxyMetrics {
  uint64_t queries = 0;            // datagrams received from the guest
  uint64_t malformed_queries = 0;  // dropped: not a one-question query ldns can parse
  uint64_t refused = 0;            // answered REFUSED: name not allowlisted, not A/AAAA/IN
  uint64_t forwarded = 0;          // sent upstream
  uint64_t answered = 0;           // filtered answers released to the guest
  uint64_t servfail = 0;           // answered SERVFAIL (any cause below)
  uint64_t overloaded = 0;         // SERVFAIL: max_outstanding queries already waiting
  // Records removed from upstream answers.
  std::array<uint64_t, kAddressClassCount> stripped_by_class{};  // by AddressClass name
  uint64_t stripped_off_chain = 0;
  uint64_t stripped_other_sections = 0;
  uint64_t stripped_too_large = 0;
  uint64_t pins = 0;          // addresses pinned (each with every allowed port)
  uint64_t pin_failures = 0;  // SERVFAIL: the pin transaction failed
  uint64_t upstream_timeouts = 0;
  uint64_t upstream_errors = 0;    // socket errors, TCP failures, SERVFAIL/REFUSED upstream
  uint64_t malformed_answers = 0;  // dropped upstream messages (garbage, wrong id/question)
  uint64_t tcp_fallbacks = 0;      // truncated UDP answers retried over TCP
  uint64_t send_errors = 0;        // answers the kernel refused to send to the guest
  std::string last_error;          // the most recent per-query error, for the daemon's log
};

// Adds `m`'s counters into `total` (last_error: `m`'s when it has one):
// the daemon's sum over its sandboxes' proxies.
ProxyMetrics& operator+=(ProxyMetrics& total, const ProxyMetrics& m);

// "queries=3 refused=1 ... stripped{metadata}=2": for logs and test failures.
std::string ToString(const ProxyMetrics& m);

}  // namespace forkd::dns
