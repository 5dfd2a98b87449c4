#include "forkd/dns/proxy_metrics.h"

#include "gtest/gtest.h"

namespace forkd::dns {
namespace {

TEST(ProxyMetrics, SumAddsEveryCounterAndKeepsTheLatestError) {
  ProxyMetrics a, b;
  a.queries = 3;
  a.refused = 1;
  a.stripped_by_class[0] = 2;
  a.last_error = "old";
  b.queries = 4;
  b.tcp_fallbacks = 5;
  b.stripped_by_class[0] = 1;
  b.stripped_by_class[kAddressClassCount - 1] = 7;
  a += b;
  EXPECT_EQ(a.queries, 7U);
  EXPECT_EQ(a.refused, 1U);
  EXPECT_EQ(a.tcp_fallbacks, 5U);
  EXPECT_EQ(a.stripped_by_class[0], 3U);
  EXPECT_EQ(a.stripped_by_class[kAddressClassCount - 1], 7U);
  EXPECT_EQ(a.last_error, "old");  // b had none
  b.last_error = "new";
  a += b;
  EXPECT_EQ(a.last_error, "new");
  EXPECT_EQ(a.queries, 11U);
  // Every counter is summed: a sum of all-ones metrics with itself shows each as 2 in
  // ToString (a field left out of operator+= would print 1).
  ProxyMetrics ones;
  ones.queries = ones.malformed_queries = ones.refused = ones.forwarded = ones.answered =
      ones.servfail = ones.overloaded = ones.stripped_off_chain = ones.stripped_other_sections =
          ones.stripped_too_large = ones.pins = ones.pin_failures = ones.upstream_timeouts =
              ones.upstream_errors = ones.malformed_answers = ones.tcp_fallbacks =
                  ones.send_errors = 1;
  ProxyMetrics sum = ones;
  sum += ones;
  const std::string text = ToString(sum);
  EXPECT_EQ(text.find("=1 "), std::string::npos) << text;
  EXPECT_EQ(text.back(), '2') << text;
}

}  // namespace
}  // namespace forkd::dns
