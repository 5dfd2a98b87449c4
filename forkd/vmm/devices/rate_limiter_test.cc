#include "forkd/vmm/devices/rate_limiter.h"

#include <chrono>

#include "gtest/gtest.h"

namespace forkd::vmm {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

struct FakeClock {
  RateLimiter::TimePoint now{seconds(1000)};
  RateLimiter::Clock fn() {
    return [this] { return now; };
  }
};

TEST(RateLimiter, UnlimitedAlwaysAdmits) {
  RateLimiter l;
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(l.TryConsume(1 << 20));
  EXPECT_EQ(l.TimeUntilReady(1 << 30), nanoseconds(0));
}

TEST(RateLimiter, BytesBurstThenRefillAtTheRate) {
  FakeClock clk;
  RateLimiter l({.bytes = {.rate = 1000, .burst = 4000}}, clk.fn());
  EXPECT_TRUE(l.TryConsume(3000));
  EXPECT_TRUE(l.TryConsume(1000));
  EXPECT_FALSE(l.TryConsume(1));  // burst used up
  EXPECT_EQ(l.TimeUntilReady(500), milliseconds(500));
  clk.now += milliseconds(499);
  EXPECT_FALSE(l.TryConsume(500));
  clk.now += milliseconds(1);
  EXPECT_TRUE(l.TryConsume(500));
  EXPECT_FALSE(l.TryConsume(1));
  // Refill stops at the burst.
  clk.now += seconds(100);
  EXPECT_TRUE(l.TryConsume(4000));
  EXPECT_FALSE(l.TryConsume(1));
}

TEST(RateLimiter, OpsLimitCountsOperationsWhateverTheirSize) {
  FakeClock clk;
  RateLimiter l({.ops = {.rate = 10, .burst = 2}}, clk.fn());
  EXPECT_TRUE(l.TryConsume(1 << 20));
  EXPECT_TRUE(l.TryConsume(0));
  EXPECT_FALSE(l.TryConsume(0));
  EXPECT_EQ(l.TimeUntilReady(0), milliseconds(100));
  clk.now += milliseconds(100);
  EXPECT_TRUE(l.TryConsume(1 << 20));
}

TEST(RateLimiter, RefusalTakesFromNeitherBucket) {
  FakeClock clk;
  RateLimiter l({.bytes = {.rate = 1, .burst = 10}, .ops = {.rate = 1, .burst = 1}}, clk.fn());
  EXPECT_TRUE(l.TryConsume(5));   // bytes 5 left, ops 0
  EXPECT_FALSE(l.TryConsume(5));  // no op: the 5 bytes must stay
  clk.now += seconds(1);          // ops 1, bytes 6
  EXPECT_TRUE(l.TryConsume(6));
}

TEST(RateLimiter, RequestLargerThanTheBurstIsAdmittedFromAFullBucketInDebt) {
  FakeClock clk;
  RateLimiter l({.bytes = {.rate = 1000, .burst = 1000}}, clk.fn());
  EXPECT_TRUE(l.TryConsume(3000));  // never fits otherwise
  EXPECT_FALSE(l.TryConsume(1));
  // 2000 bytes of debt plus one byte: 2.001 s.
  EXPECT_EQ(l.TimeUntilReady(1), milliseconds(2001));
  clk.now += milliseconds(2001);
  EXPECT_TRUE(l.TryConsume(1));
}

TEST(RateLimiter, ForceConsumeChargesBytesLearntLater) {
  FakeClock clk;
  RateLimiter l({.bytes = {.rate = 1000, .burst = 1000}}, clk.fn());
  EXPECT_TRUE(l.TryConsume(1));
  l.ForceConsumeBytes(1999);  // a 2000-byte frame
  EXPECT_FALSE(l.TryConsume(1));
  clk.now += milliseconds(1000);
  EXPECT_FALSE(l.TryConsume(1));  // still 0 tokens: not > 0 yet
  clk.now += milliseconds(1);
  EXPECT_TRUE(l.TryConsume(1));
}

TEST(RateLimiter, LongRunRateIsTheConfiguredOne) {
  // Whatever the request sizes, what is admitted over 10 s is the burst plus
  // 10 s at the rate (within one request).
  FakeClock clk;
  RateLimiter l({.bytes = {.rate = 64 * 1024, .burst = 16 * 1024}}, clk.fn());
  uint64_t admitted = 0;
  for (int step = 0; step < 10'000; ++step) {
    while (l.TryConsume(777)) admitted += 777;
    clk.now += milliseconds(1);
  }
  EXPECT_GE(admitted, 10u * 64 * 1024);
  EXPECT_LE(admitted, 10u * 64 * 1024 + 16 * 1024 + 777);
}

TEST(RateLimiter, ParseRateLimit) {
  EXPECT_EQ(*ParseRateLimit("1000"), (RateLimit{1000, 0}));
  EXPECT_EQ(*ParseRateLimit("1000:64"), (RateLimit{1000, 64}));
  EXPECT_EQ(ParseRateLimit("1000").value().size(), 1000u);
  for (const char* bad : {"", "0", "x", "10:", "10:0", ":5", "10:5:1", "-1", "1k"}) {
    EXPECT_FALSE(ParseRateLimit(bad).ok()) << bad;
  }
}

TEST(RateLimiter, ConfigRoundTripsThroughTheSnapshotEncoding) {
  const RateLimiterConfig c{.bytes = {.rate = 5, .burst = 6}, .ops = {.rate = 7, .burst = 0}};
  snapshot::ByteWriter w;
  WriteRateLimiterConfig(w, c);
  const std::vector<uint8_t> bytes = w.Take();
  snapshot::ByteReader r(bytes, "test");
  auto back = ReadRateLimiterConfig(r);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, c);
  EXPECT_TRUE(r.Finish().ok());
}

}  // namespace
}  // namespace forkd::vmm
