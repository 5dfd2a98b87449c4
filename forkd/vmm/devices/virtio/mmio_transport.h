// virtio-mmio transport, version 2 register layout (virtio 1.x, 4.2.2):
// register file, feature negotiation, device status machine with reset,
// queue configuration. Queue notifications normally never reach Write():
// the Machine registers a KVM_IOEVENTFD per queue on QueueNotify and the
// QueueNotifier thread calls Kick(index) (notifier.h). A QueueNotify write
// that does reach Write() (no ioeventfd: off, refused by KVM, or a value no
// ioeventfd matches) is processed synchronously on the vCPU's MMIO exit and
// counted in mmio_notifies(). The lock serialises the two paths. Interrupts
// go through `irq` (an irqfd write in the Machine).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "forkd/vmm/devices/bus.h"
#include "forkd/vmm/devices/virtio/device.h"
#include "forkd/vmm/devices/virtio/queue.h"
#include "forkd/vmm/vstate/memory.h"
#include "forkd/vmm/vstate/state.h"

namespace forkd::vmm::virtio {

// Device status bits (virtio 1.x, 2.1).
inline constexpr uint32_t kStatusAcknowledge = 1;
inline constexpr uint32_t kStatusDriver = 2;
inline constexpr uint32_t kStatusDriverOk = 4;
inline constexpr uint32_t kStatusFeaturesOk = 8;
inline constexpr uint32_t kStatusNeedsReset = 64;
inline constexpr uint32_t kStatusFailed = 128;

// InterruptStatus bits.
inline constexpr uint32_t kInterruptUsedBuffer = 1;
inline constexpr uint32_t kInterruptConfigChange = 2;

// Register offsets.
namespace reg {
inline constexpr uint64_t kMagic = 0x000;
inline constexpr uint64_t kVersion = 0x004;
inline constexpr uint64_t kDeviceId = 0x008;
inline constexpr uint64_t kVendorId = 0x00c;
inline constexpr uint64_t kDeviceFeatures = 0x010;
inline constexpr uint64_t kDeviceFeaturesSel = 0x014;
inline constexpr uint64_t kDriverFeatures = 0x020;
inline constexpr uint64_t kDriverFeaturesSel = 0x024;
inline constexpr uint64_t kQueueSel = 0x030;
inline constexpr uint64_t kQueueNumMax = 0x034;
inline constexpr uint64_t kQueueNum = 0x038;
inline constexpr uint64_t kQueueReady = 0x044;
inline constexpr uint64_t kQueueNotify = 0x050;
inline constexpr uint64_t kInterruptStatus = 0x060;
inline constexpr uint64_t kInterruptAck = 0x064;
inline constexpr uint64_t kStatus = 0x070;
inline constexpr uint64_t kQueueDescLow = 0x080;
inline constexpr uint64_t kQueueDescHigh = 0x084;
inline constexpr uint64_t kQueueDriverLow = 0x090;
inline constexpr uint64_t kQueueDriverHigh = 0x094;
inline constexpr uint64_t kQueueDeviceLow = 0x0a0;
inline constexpr uint64_t kQueueDeviceHigh = 0x0a4;
inline constexpr uint64_t kConfigGeneration = 0x0fc;
inline constexpr uint64_t kConfig = 0x100;
}  // namespace reg

inline constexpr uint32_t kMagicValue = 0x74726976;  // "virt"
inline constexpr uint32_t kMmioVersion = 2;
inline constexpr uint32_t kVendorId = 0x6b726f66;  // "fork"

struct TransportState {
  uint32_t device_features_sel = 0;
  uint32_t driver_features_sel = 0;
  uint64_t driver_features = 0;
  uint32_t status = 0;
  uint32_t queue_sel = 0;
  uint32_t interrupt_status = 0;
  uint32_t config_generation = 0;
  std::vector<QueueState> queues;

  bool operator==(const TransportState&) const = default;
};

class MmioTransport : public BusDevice {
 public:
  // `mem` must outlive the transport (both are owned by the Machine).
  MmioTransport(std::string name, const GuestMemory& mem, std::unique_ptr<VirtioDevice> device,
                std::function<void()> irq);

  const std::string& name() const { return name_; }

  // The device, as the concrete type `D` it was created with (what
  // Machine::AddVirtio's caller hands to a host-side backend thread). It
  // lives as long as the transport. `D` must be the device's type: a
  // mismatch is a programming error and aborts rather than mis-cast.
  template <typename D>
  D& device() {
    if (device_->device_id() != D::kDeviceId) std::abort();
    return static_cast<D&>(*device_);
  }

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Processes queue `index` as if the driver had notified it (the queue
  // notifier thread: ioeventfd notifies and host-side events).
  void Kick(uint32_t index);

  // Told about every failed ProcessQueue, with its cause, outside the lock:
  // `host_failure` (see HostFailure in device.h) means the host broke (the
  // Machine stops the VM with an error), otherwise the guest broke a queue
  // and the device is in DEVICE_NEEDS_RESET. Without a handler the cause is
  // logged to stderr. Set before the device is used.
  using ErrorFn = std::function<void(const absl::Status& cause, bool host_failure)>;
  void set_error_handler(ErrorFn fn) { on_error_ = std::move(fn); }
  // The cause of the last failure ("" when none): what NEEDS_RESET means.
  std::string last_error() const;

  // Forwards to the device's VirtioDevice::set_retry (before use).
  void set_retry(VirtioDevice::RetryFn fn) { device_->set_retry(std::move(fn)); }

  uint32_t queue_count() const { return static_cast<uint32_t>(queues_.size()); }
  // QueueNotify writes that reached Write(), i.e. took the MMIO exit (with
  // ioeventfd on, only values no ioeventfd matched).
  uint64_t mmio_notifies() const { return mmio_notifies_.load(std::memory_order_relaxed); }

  TransportState save() const;
  absl::Status restore(const TransportState& s);
  DeviceState SaveDevice() const;
  absl::Status RestoreDevice(const DeviceState& d);

 private:
  uint32_t ReadRegLocked(uint64_t offset);
  void WriteRegLocked(uint64_t offset, uint32_t v, bool* raise);
  void WriteStatusLocked(uint32_t v);
  void ProcessLocked(uint32_t index, bool* raise);
  void NeedsResetLocked(bool* raise);
  // Hands a failure recorded under the lock to on_error_ (call unlocked).
  void ReportError();
  void ResetLocked();
  Queue* SelectedLocked();
  uint64_t OfferedFeatures() const { return device_->features() | kFeatureVersion1; }

  const std::string name_;
  const GuestMemory& mem_;
  std::function<void()> irq_;
  mutable std::mutex mu_;
  std::unique_ptr<VirtioDevice> device_;
  TransportState s_;  // s_.queues unused: queues_ hold the live queue state
  std::vector<Queue> queues_;
  std::atomic<uint64_t> mmio_notifies_{0};
  ErrorFn on_error_;
  absl::Status pending_error_;  // under mu_: not yet reported
  std::string last_error_;      // under mu_
};

}  // namespace forkd::vmm::virtio
