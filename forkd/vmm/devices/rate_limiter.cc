#include "forkd/vmm/devices/rate_limiter.h"

#include <algorithm>
#include <charconv>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace forkd::vmm {
namespace {

constexpr __int128 kNano = 1'000'000'000;
constexpr uint8_t kConfigVersion = 1;

std::optional<uint64_t> ParseDecimal(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

absl::StatusOr<RateLimit> ParseRateLimit(const std::string& text) {
  const size_t colon = text.find(':');
  const std::string_view all(text);
  const auto rate = ParseDecimal(all.substr(0, colon));
  std::optional<uint64_t> burst = 0;
  if (colon != std::string::npos) burst = ParseDecimal(all.substr(colon + 1));
  if (!rate || *rate == 0 || !burst || (colon != std::string::npos && *burst == 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate '", text, "' is not RATE[:BURST] with decimal RATE, BURST > 0"));
  }
  return RateLimit{*rate, *burst};
}

void WriteRateLimiterConfig(snapshot::ByteWriter& w, const RateLimiterConfig& c) {
  w.U8(kConfigVersion);
  w.U64(c.bytes.rate);
  w.U64(c.bytes.burst);
  w.U64(c.ops.rate);
  w.U64(c.ops.burst);
}

absl::StatusOr<RateLimiterConfig> ReadRateLimiterConfig(snapshot::ByteReader& r) {
  FORKD_ASSIGN_OR_RETURN(uint8_t version, r.U8("rate limiter version"));
  if (version != kConfigVersion) {
    return absl::DataLossError(absl::StrCat("rate limiter config version ", version));
  }
  RateLimiterConfig c;
  FORKD_ASSIGN_OR_RETURN(c.bytes.rate, r.U64("rate limiter bytes/s"));
  FORKD_ASSIGN_OR_RETURN(c.bytes.burst, r.U64("rate limiter bytes burst"));
  FORKD_ASSIGN_OR_RETURN(c.ops.rate, r.U64("rate limiter ops/s"));
  FORKD_ASSIGN_OR_RETURN(c.ops.burst, r.U64("rate limiter ops burst"));
  return c;
}

TokenBucket::TokenBucket(RateLimit limit, TimePoint now)
    : limit_(limit), nano_tokens_(static_cast<__int128>(limit.size()) * kNano), last_(now) {}

void TokenBucket::Refill(TimePoint now) {
  if (now <= last_) return;
  const __int128 full = static_cast<__int128>(limit_.size()) * kNano;
  const __int128 elapsed_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count();
  last_ = now;
  // rate tokens/s = rate nano-tokens/ns. Capped at the time to fill the
  // bucket from its deepest debt, so the product cannot overflow.
  const __int128 gap = full - nano_tokens_;
  const __int128 add = std::min(elapsed_ns * static_cast<__int128>(limit_.rate), gap);
  nano_tokens_ = std::min(full, nano_tokens_ + std::max<__int128>(add, 0));
}

bool TokenBucket::TryConsume(uint64_t n, TimePoint now) {
  Refill(now);
  const __int128 need = static_cast<__int128>(std::min<uint64_t>(n, limit_.size())) * kNano;
  if (nano_tokens_ < need) return false;
  nano_tokens_ -= static_cast<__int128>(n) * kNano;
  return true;
}

void TokenBucket::ForceConsume(uint64_t n, TimePoint now) {
  Refill(now);
  nano_tokens_ -= static_cast<__int128>(n) * kNano;
}

std::chrono::nanoseconds TokenBucket::TimeUntil(uint64_t n, TimePoint now) {
  Refill(now);
  const __int128 need = static_cast<__int128>(std::min<uint64_t>(n, limit_.size())) * kNano;
  if (nano_tokens_ >= need) return std::chrono::nanoseconds(0);
  // Rounded up: a retry then never comes early.
  const __int128 rate = limit_.rate;
  const __int128 ns = (need - nano_tokens_ + rate - 1) / rate;
  return std::chrono::nanoseconds(
      static_cast<int64_t>(std::min<__int128>(ns, std::chrono::nanoseconds::max().count())));
}

RateLimiter::RateLimiter(RateLimiterConfig config, Clock clock)
    : clock_(clock ? std::move(clock) : Clock(&std::chrono::steady_clock::now)) {
  Reconfigure(config);
}

void RateLimiter::Reconfigure(RateLimiterConfig config) {
  config_ = config;
  const TimePoint now = clock_();
  bytes_.reset();
  ops_.reset();
  if (!config_.bytes.unlimited()) bytes_.emplace(config_.bytes, now);
  if (!config_.ops.unlimited()) ops_.emplace(config_.ops, now);
}

bool RateLimiter::TryConsume(uint64_t bytes) {
  if (unlimited()) return true;
  const TimePoint now = clock_();
  // Check both before taking from either, so a refusal takes nothing.
  if (bytes_ && bytes_->TimeUntil(bytes, now).count() != 0) return false;
  if (ops_ && !ops_->TryConsume(1, now)) return false;
  if (bytes_) (void)bytes_->TryConsume(bytes, now);  // checked above
  return true;
}

void RateLimiter::ForceConsumeBytes(uint64_t bytes) {
  if (bytes_) bytes_->ForceConsume(bytes, clock_());
}

std::chrono::nanoseconds RateLimiter::TimeUntilReady(uint64_t bytes) {
  if (unlimited()) return std::chrono::nanoseconds(0);
  const TimePoint now = clock_();
  std::chrono::nanoseconds wait(0);
  if (bytes_) wait = std::max(wait, bytes_->TimeUntil(bytes, now));
  if (ops_) wait = std::max(wait, ops_->TimeUntil(1, now));
  return wait;
}

}  // namespace forkd::vmm
