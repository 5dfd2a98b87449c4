#include "forkd/dns/proxy_metrics.h"

#include "absl/strings/str_cat.h"

namespace forkd::dns {

std::string ToString(const ProxyMetrics& m) {
  std::string out = absl::StrCat(
      "queries=", m.queries, " malformed_queries=", m.malformed_queries, " refused=", m.refused,
      " forwarded=", m.forwarded, " answered=", m.answered, " servfail=", m.servfail,
      " overloaded=", m.overloaded, " pins=", m.pins, " pin_failures=", m.pin_failures,
      " upstream_timeouts=", m.upstream_timeouts, " upstream_errors=", m.upstream_errors,
      " malformed_answers=", m.malformed_answers, " tcp_fallbacks=", m.tcp_fallbacks,
      " send_errors=", m.send_errors, " stripped{off_chain}=", m.stripped_off_chain,
      " stripped{other_sections}=", m.stripped_other_sections,
      " stripped{too_large}=", m.stripped_too_large);
  if (!m.last_error.empty()) absl::StrAppend(&out, " last_error=\"", m.last_error, "\"");
  for (int i = 0; i < kAddressClassCount; ++i) {
    if (m.stripped_by_class[i] == 0) continue;
    const std::string_view name = ToString(static_cast<AddressClass>(i));
    absl::StrAppend(&out, " stripped{", absl::string_view(name.data(), name.size()),
                    "}=", m.stripped_by_class[i]);
  }
  return out;
}

ProxyMetrics& operator+=(ProxyMetrics& total, const ProxyMetrics& m) {
  total.queries += m.queries;
  total.malformed_queries += m.malformed_queries;
  total.refused += m.refused;
  total.forwarded += m.forwarded;
  total.answered += m.answered;
  total.servfail += m.servfail;
  total.overloaded += m.overloaded;
  for (size_t i = 0; i < total.stripped_by_class.size(); i++) {
    total.stripped_by_class[i] += m.stripped_by_class[i];
  }
  total.stripped_off_chain += m.stripped_off_chain;
  total.stripped_other_sections += m.stripped_other_sections;
  total.stripped_too_large += m.stripped_too_large;
  total.pins += m.pins;
  total.pin_failures += m.pin_failures;
  total.upstream_timeouts += m.upstream_timeouts;
  total.upstream_errors += m.upstream_errors;
  total.malformed_answers += m.malformed_answers;
  total.tcp_fallbacks += m.tcp_fallbacks;
  total.send_errors += m.send_errors;
  if (!m.last_error.empty()) total.last_error = m.last_error;
  return total;
}

}  // namespace forkd::dns
