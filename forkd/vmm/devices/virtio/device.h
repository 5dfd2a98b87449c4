// The interface between a virtio device model (rng, vsock) and its
// transport. The transport owns registers, feature negotiation, the status
// machine and the queues; a device says what it is and consumes buffers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "forkd/vmm/devices/virtio/queue.h"
#include "forkd/vmm/vstate/memory.h"

namespace forkd::vmm::virtio {

// Marks a failed ProcessQueue as the host's fault (getrandom failed, ...)
// rather than the guest's: the transport then reports it as fatal (the VM
// stops with an error) instead of setting DEVICE_NEEDS_RESET. OK stays OK.
inline absl::Status HostFailure(absl::Status s) {
  if (!s.ok()) s.SetPayload("forkd.vmm/host-failure", absl::Cord("1"));
  return s;
}
inline bool IsHostFailure(const absl::Status& s) {
  return s.GetPayload("forkd.vmm/host-failure").has_value();
}

// Feature bits the transport handles itself.
inline constexpr uint64_t kFeatureVersion1 = 1ULL << 32;

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  virtual uint32_t device_id() const = 0;
  // Device-specific feature bits; the transport adds VIRTIO_F_VERSION_1.
  virtual uint64_t features() const { return 0; }
  // QueueNumMax of each queue, in queue order.
  virtual std::vector<uint16_t> queue_max_sizes() const = 0;

  // Device configuration space (transport offset 0x100 onward).
  virtual void ReadConfig(uint64_t offset, std::span<uint8_t> data) const {
    for (auto& b : data) b = 0;
    (void)offset;
  }
  virtual void WriteConfig(uint64_t offset, std::span<const uint8_t> data) {
    (void)offset;
    (void)data;
  }

  // Consumes what the driver made available on queue `index`. Called with
  // the transport's lock held, only while the device is live (DRIVER_OK).
  // `queues` holds all of the device's queues (vsock answers a tx packet on
  // rx); a device uses only ready ones.
  // Returns true when used buffers were added (the transport interrupts);
  // an error means the guest broke the queue (DEVICE_NEEDS_RESET).
  virtual absl::StatusOr<bool> ProcessQueue(size_t index, std::span<Queue> queues,
                                            const GuestMemory& mem) = 0;

  // Driver wrote 0 to Status.
  virtual void Reset() {}

  // Device-specific snapshot state beyond the transport's.
  virtual std::vector<uint8_t> SaveSpecific() const { return {}; }
  virtual absl::Status RestoreSpecific(std::span<const uint8_t> bytes) {
    return bytes.empty() ? absl::OkStatus()
                         : absl::DataLossError("device-specific state for a stateless device");
  }
  // True once after RestoreSpecific changed what config space reports (a
  // fork given a new MAC): the transport bumps ConfigGeneration and raises
  // a configuration-change interrupt.
  virtual bool ConsumeConfigChange() { return false; }

  // A rate-limited device that stops serving queue `queue` asks to be run
  // again after `delay` (the Machine arms a timer whose expiry kicks the
  // queue on the notifier thread). Set before the device is used.
  using RetryFn = std::function<void(size_t queue, std::chrono::nanoseconds delay)>;
  void set_retry(RetryFn fn) { retry_ = std::move(fn); }

 protected:
  void ScheduleRetry(size_t queue, std::chrono::nanoseconds delay) const {
    if (retry_) retry_(queue, delay);
  }

 private:
  RetryFn retry_;
};

}  // namespace forkd::vmm::virtio
