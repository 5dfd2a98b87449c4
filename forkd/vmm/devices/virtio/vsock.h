// virtio-vsock (device id 19): queues rx (0), tx (1), event (2); config is
// the guest's CID. Stream sockets only, host-initiated connections only in
// this version (a guest REQUEST is answered with RST).
//
// The device holds the per-connection protocol state (credit accounting,
// packets waiting for rx buffers); the host side of each connection is the
// Backend (VsockMuxer: unix socket per connection).
//
// Locking: the transport calls ProcessQueue with its lock held; the device
// then takes its own lock, and calls Backend with neither... except the
// transport's, so a Backend must never call into the transport or the
// device while holding its own lock.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <vector>

#include "forkd/vmm/devices/virtio/device.h"

namespace forkd::vmm::virtio {

#pragma pack(push, 1)
struct VsockHeader {
  uint64_t src_cid;
  uint64_t dst_cid;
  uint32_t src_port;
  uint32_t dst_port;
  uint32_t len;
  uint16_t type;
  uint16_t op;
  uint32_t flags;
  uint32_t buf_alloc;
  uint32_t fwd_cnt;
};
#pragma pack(pop)
static_assert(sizeof(VsockHeader) == 44);

inline constexpr uint64_t kVsockHostCid = 2;
inline constexpr uint16_t kVsockTypeStream = 1;
inline constexpr uint32_t kVsockEventTransportReset = 0;
enum VsockOp : uint16_t {
  kVsockOpRequest = 1,
  kVsockOpResponse = 2,
  kVsockOpRst = 3,
  kVsockOpShutdown = 4,
  kVsockOpRw = 5,
  kVsockOpCreditUpdate = 6,
  kVsockOpCreditRequest = 7,
};

class VsockBackend {
 public:
  virtual ~VsockBackend() = default;
  // The guest accepted the connection from host port `local_port`.
  virtual void OnConnected(uint32_t local_port) = 0;
  // Bytes the guest sent; false when the host side cannot take them (the
  // device then resets the connection).
  virtual bool OnData(uint32_t local_port, std::span<const uint8_t> bytes) = 0;
  // The guest reset or shut the connection down, or it failed.
  virtual void OnClosed(uint32_t local_port) = 0;
};

class Vsock : public VirtioDevice {
 public:
  static constexpr const char* kName = "virtio-vsock";
  static constexpr uint32_t kDeviceId = 19;
  static constexpr uint16_t kQueueSize = 256;
  // What the host side buffers per connection for guest data: data is
  // written to the host socket synchronously, so this only bounds one burst.
  static constexpr uint32_t kHostBufAlloc = 256 * 1024;
  // Guest-provoked replies waiting for rx buffers (see PushControlLocked).
  static constexpr size_t kMaxQueuedControl = 256;

  Vsock(uint64_t guest_cid, VsockBackend* backend) : guest_cid_(guest_cid), backend_(backend) {}

  uint32_t device_id() const override { return kDeviceId; }
  std::vector<uint16_t> queue_max_sizes() const override {
    return {kQueueSize, kQueueSize, kQueueSize};
  }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) const override;
  absl::StatusOr<bool> ProcessQueue(size_t index, std::span<Queue> queues,
                                    const GuestMemory& mem) override;
  void Reset() override;
  // The guest CID; connections are never saved (their host sockets do not
  // survive a snapshot), so a restore queues a TRANSPORT_RESET event that
  // tells the guest every connection it had is gone.
  std::vector<uint8_t> SaveSpecific() const override;
  absl::Status RestoreSpecific(std::span<const uint8_t> bytes) override;

  // Host side (any thread, then kick the rx queue through the transport).
  // Starts a connection from host `local_port` to guest `guest_port`.
  void Connect(uint32_t local_port, uint32_t guest_port);
  // How many bytes the guest can take now on this connection (0 if none).
  uint32_t SendCredit(uint32_t local_port) const;
  // Queues bytes for the guest; the caller respects SendCredit.
  void Send(uint32_t local_port, std::span<const uint8_t> bytes);
  // The host side closed: tells the guest (RST) and forgets the connection.
  void Close(uint32_t local_port);

 private:
  struct Connection {
    uint32_t guest_port = 0;
    bool established = false;
    uint32_t peer_buf_alloc = 0;
    uint32_t peer_fwd_cnt = 0;
    uint32_t tx_cnt = 0;   // bytes sent to the guest
    uint32_t fwd_cnt = 0;  // bytes received from the guest and forwarded
  };
  struct Packet {
    VsockHeader hdr;
    std::vector<uint8_t> payload;
  };
  VsockHeader HeaderLocked(uint32_t local_port, uint32_t guest_port, uint16_t op) const;
  void RstLocked(uint32_t local_port, uint32_t guest_port);
  void PushControlLocked(const VsockHeader& h);
  absl::StatusOr<bool> DeliverEventLocked(Queue& event, const GuestMemory& mem);
  absl::StatusOr<bool> DeliverLocked(Queue& rx, const GuestMemory& mem);
  absl::Status HandleTxLocked(Queue& tx, const GuestMemory& mem, std::vector<uint32_t>* connected,
                              std::vector<std::pair<uint32_t, std::vector<uint8_t>>>* data,
                              std::vector<uint32_t>* closed);

  uint64_t guest_cid_;  // set again by RestoreSpecific
  VsockBackend* const backend_;
  mutable std::mutex mu_;
  std::map<uint32_t, Connection> conns_;  // by host (local) port
  std::deque<Packet> to_guest_;
  bool reset_event_pending_ = false;
};

}  // namespace forkd::vmm::virtio
