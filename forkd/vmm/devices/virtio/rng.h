// virtio-rng (device id 4): one request queue whose device-writable buffers
// are filled from getrandom(). No state of its own, which is the point for
// forks: every restored fork draws fresh host entropy.
#pragma once

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

  uint32_t device_id() const override { return kDeviceId; }
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  absl::StatusOr<bool> ProcessQueue(size_t index, std::span<Queue> queues,
                                    const GuestMemory& mem) override;
};

}  // namespace forkd::vmm::virtio
