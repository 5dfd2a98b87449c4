// virtio-rng (device id 4): one request queue whose device-writable buffers
// are filled from getrandom(). No entropy state of its own, which is the
// point for forks: every restored fork draws fresh host entropy. Its only
// state is its rate limit (bytes/s and requests/s), saved in a snapshot.
#pragma once

#include <optional>
#include <span>

#include "forkd/vmm/devices/rate_limiter.h"
#include "forkd/vmm/devices/virtio/device.h"

namespace forkd::vmm::virtio {

class Rng : public VirtioDevice {
 public:
  static constexpr const char* kName = "virtio-rng";
  static constexpr uint32_t kDeviceId = 4;
  static constexpr uint16_t kQueueSize = 256;
  // Per request; the driver accepts fewer bytes than it asked for, and this
  // bounds the time one notify spends processing the queue.
  static constexpr uint32_t kMaxBytesPerRequest = 64 * 1024;

  // Fills a buffer with entropy (getrandom by default; tests inject a
  // failing one).
  using EntropyFn = std::function<absl::Status(std::span<uint8_t>)>;

  // `limit`: the rate limit; set, it also wins over a restored snapshot's
  // (unset: unlimited on boot, the snapshot's on restore).
  explicit Rng(std::optional<RateLimiterConfig> limit = std::nullopt, RateLimiter::Clock clock = {},
               EntropyFn entropy = {});

  uint32_t device_id() const override { return kDeviceId; }
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  absl::StatusOr<bool> ProcessQueue(size_t index, std::span<Queue> queues,
                                    const GuestMemory& mem) override;
  std::vector<uint8_t> SaveSpecific() const override;
  absl::Status RestoreSpecific(std::span<const uint8_t> bytes) override;

  const RateLimiterConfig& limit() const { return limiter_.config(); }

 private:
  RateLimiter limiter_;
  const bool limit_pinned_;
  EntropyFn entropy_;
};

}  // namespace forkd::vmm::virtio
