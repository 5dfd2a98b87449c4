// Token-bucket rate limiting for the virtio devices (rng, net rx/tx, vsock):
// bytes per second and operations (requests, frames, packets) per second,
// each with a burst. Tokens refill continuously at the rate up to the
// burst (the bucket's size, which is also what a fresh bucket holds).
//
// A request larger than the burst would never fit: it is admitted when the
// bucket is full and leaves it in debt, so the long-run rate still holds
// (Firecracker admits such a request the same way).
//
// The clock is injectable (unit tests step it by hand). A device that is
// refused stops processing the queue and asks for a retry after
// TimeUntilReady (VirtioDevice::ScheduleRetry), so a throttled guest is
// served again without notifying.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/snapshot/byte_io.h"

namespace forkd::vmm {

// One limit: `rate` tokens per second (0: unlimited), at most `burst`
// (0: one second's worth of `rate`).
struct RateLimit {
  uint64_t rate = 0;
  uint64_t burst = 0;
  bool unlimited() const { return rate == 0; }
  uint64_t size() const { return burst != 0 ? burst : rate; }
  bool operator==(const RateLimit&) const = default;
};

// What one device is limited to.
struct RateLimiterConfig {
  RateLimit bytes;
  RateLimit ops;
  bool unlimited() const { return bytes.unlimited() && ops.unlimited(); }
  bool operator==(const RateLimiterConfig&) const = default;
};

// "RATE[:BURST]" (decimal, RATE > 0) as a forkd-vmm flag gives it.
absl::StatusOr<RateLimit> ParseRateLimit(const std::string& text);

// Snapshot encoding of a config (part of a device's state).
void WriteRateLimiterConfig(snapshot::ByteWriter& w, const RateLimiterConfig& c);
absl::StatusOr<RateLimiterConfig> ReadRateLimiterConfig(snapshot::ByteReader& r);

class TokenBucket {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  TokenBucket(RateLimit limit, TimePoint now);

  const RateLimit& limit() const { return limit_; }
  // Refills to `now`, then takes `n` if the bucket holds min(n, size)
  // tokens (it may go into debt by what exceeds the size).
  bool TryConsume(uint64_t n, TimePoint now);
  // Takes `n` regardless, going into debt if need be (bytes learnt only
  // after an admitted operation, e.g. the length of a frame read).
  void ForceConsume(uint64_t n, TimePoint now);
  // How long until TryConsume(n) would succeed (zero: now).
  std::chrono::nanoseconds TimeUntil(uint64_t n, TimePoint now);

 private:
  void Refill(TimePoint now);

  RateLimit limit_;
  // Tokens in units of 1/1e9 token (exact with integer nanoseconds);
  // negative while in debt.
  __int128 nano_tokens_ = 0;
  TimePoint last_;
};

class RateLimiter {
 public:
  using TimePoint = TokenBucket::TimePoint;
  using Clock = std::function<TimePoint()>;

  // `clock` defaults to steady_clock.
  explicit RateLimiter(RateLimiterConfig config = {}, Clock clock = {});

  const RateLimiterConfig& config() const { return config_; }
  // New limits, buckets full (a restore applying a snapshot's limits).
  void Reconfigure(RateLimiterConfig config);
  bool unlimited() const { return config_.unlimited(); }

  // One operation of `bytes` bytes: both buckets or neither.
  bool TryConsume(uint64_t bytes);
  // Bytes charged after the fact (see TokenBucket::ForceConsume).
  void ForceConsumeBytes(uint64_t bytes);
  // How long until TryConsume(bytes) would succeed.
  std::chrono::nanoseconds TimeUntilReady(uint64_t bytes);

 private:
  RateLimiterConfig config_;
  Clock clock_;
  std::optional<TokenBucket> bytes_;
  std::optional<TokenBucket> ops_;
};

}  // namespace forkd::vmm
