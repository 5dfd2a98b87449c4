// virtio-net (device id 1) on a tap fd: queues rx (0) and tx (1); the only
// feature is VIRTIO_NET_F_MAC (config space = the 6-byte MAC). No offloads,
// so every frame carries a 12-byte virtio_net_hdr_v1 of zeros, which is
// exactly what a tap opened with IFF_VNET_HDR and TUNSETVNETHDRSZ 12 wants
// in front of each frame (tap.h).
//
// TX runs when the guest notifies the tx queue (on the notifier thread, or
// on the vCPU thread with --no-ioeventfd): header + frame -> one writev to
// the tap. The guest's header is never passed on (it could ask
// the host kernel for offloads nobody negotiated): the tap gets zeros.
// RX runs when the rx queue is processed (the guest posted buffers, or
// NetPump saw the tap readable): while the guest has a buffer, one frame is
// read from the tap and copied into it. With no buffer the device stops
// reading and frames wait in the tap's queue (the kernel drops when full):
// nothing is buffered here.
// Rate limits (NetRateLimits): tx takes one op and the frame's bytes per
// chain, else the chain stays available and the queue is retried when the
// tokens are back; rx takes one op and one byte before reading a frame from
// the tap and charges the rest of the frame after (the bucket may go into
// debt), else the frame stays in the tap and rx is retried. The limits are
// saved with the MAC (state version 2; version 1, a MAC alone, restores).
//
// Locking: the transport calls ProcessQueue with its lock held; the device
// takes its own. NetPump calls the transport (Kick) holding no lock of the
// device's.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/vmm/devices/rate_limiter.h"
#include "forkd/vmm/devices/virtio/device.h"

namespace forkd::vmm::virtio {

using MacAddress = std::array<uint8_t, 6>;
// "aa:bb:cc:dd:ee:ff" (hex digits, either case); rejects multicast MACs.
absl::StatusOr<MacAddress> ParseMacAddress(const std::string& text);
std::string FormatMacAddress(const MacAddress& mac);
// A random, locally administered unicast MAC (02:xx:...).
absl::StatusOr<MacAddress> RandomMacAddress();

inline constexpr uint64_t kNetFeatureMac = 1ULL << 5;  // VIRTIO_NET_F_MAC
inline constexpr uint32_t kNetHeaderSize = 12;         // virtio_net_hdr_v1

struct NetStats {
  uint64_t tx_frames = 0;
  uint64_t tx_dropped = 0;  // malformed size, or the tap refused it
  uint64_t rx_frames = 0;
  uint64_t rx_dropped = 0;  // did not fit the guest's buffer, or a tap read error
};

// virtio-net's rate limits: rx (frames from the tap to the guest) and tx.
// Set, a limit also wins over a restored snapshot's (unset: unlimited on
// boot, the snapshot's on restore).
struct NetRateLimits {
  std::optional<RateLimiterConfig> rx, tx;
  RateLimiter::Clock clock;  // steady_clock by default; tests step their own
};

class Net : public VirtioDevice {
 public:
  static constexpr const char* kName = "virtio-net";
  static constexpr uint32_t kDeviceId = 1;
  static constexpr uint16_t kQueueSize = 256;
  static constexpr size_t kRxQueue = 0;
  static constexpr size_t kTxQueue = 1;
  // No offloads and no F_MTU: the driver's MTU is 1500, so an Ethernet frame
  // is at most 1514 bytes, 1518 with a VLAN tag.
  static constexpr uint32_t kMaxFrameBytes = 1518;
  static constexpr uint32_t kMinFrameBytes = 14;  // an Ethernet header
  // One read from the tap: header + the largest frame a tap can hold.
  static constexpr uint32_t kMaxTapReadBytes = kNetHeaderSize + 65536;

  // `tap` is a non-blocking fd with a 12-byte vnet header in front of each
  // frame (a tap from OpenTap; a SOCK_SEQPACKET socket in tests).
  // `mac_override`, when set, replaces a restored MAC (RestoreSpecific).
  Net(UniqueFd tap, MacAddress mac, std::optional<MacAddress> mac_override = std::nullopt,
      NetRateLimits limits = {});

  uint32_t device_id() const override { return kDeviceId; }
  uint64_t features() const override { return kNetFeatureMac; }
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) const override;
  absl::StatusOr<bool> ProcessQueue(size_t index, std::span<Queue> queues,
                                    const GuestMemory& mem) override;
  void Reset() override;
  // The MAC. A restore with a MAC override reports a configuration change.
  std::vector<uint8_t> SaveSpecific() const override;
  absl::Status RestoreSpecific(std::span<const uint8_t> bytes) override;
  bool ConsumeConfigChange() override;

  int tap_fd() const { return tap_.get(); }
  RateLimiterConfig rx_limit() const;
  RateLimiterConfig tx_limit() const;
  MacAddress mac() const;
  NetStats stats() const;
  // For NetPump: true while the device wants the tap watched (it has rx
  // buffers and read the tap empty). rx_runs counts rx processing passes.
  bool wants_rx() const { return wants_rx_.load(std::memory_order_acquire); }
  void set_wants_rx(bool v) { wants_rx_.store(v, std::memory_order_release); }
  uint64_t rx_runs() const { return rx_runs_.load(std::memory_order_acquire); }
  // Called (under the device's lock) when wants_rx goes false -> true, so
  // NetPump starts watching the tap; it must not call into the device.
  void set_rx_wakeup(std::function<void()> wake);

 private:
  absl::Status TransmitLocked(const GuestMemory& mem, const DescriptorChain& chain);
  absl::StatusOr<bool> ReceiveLocked(Queue& rx, const GuestMemory& mem);

  const UniqueFd tap_;
  const std::optional<MacAddress> mac_override_;
  mutable std::mutex mu_;
  MacAddress mac_;
  NetStats stats_;
  bool config_changed_ = false;
  std::vector<uint8_t> rx_buf_;  // one frame read from the tap
  RateLimiter rx_limiter_, tx_limiter_;
  const bool rx_pinned_, tx_pinned_;
  std::atomic<bool> wants_rx_{false};
  std::atomic<uint64_t> rx_runs_{0};
  std::function<void()> rx_wakeup_;
};

}  // namespace forkd::vmm::virtio
