// virtio-vsock (device id 19): queues rx (0), tx (1), event (2); config is
// the guest's CID. Stream sockets only, connections both ways:
//  * host-initiated: the backend calls Connect; the guest answers RESPONSE
//    (Backend::OnConnected) or RST.
//  * guest-initiated: a guest REQUEST to host port P is handed to the
//    backend (OnGuestConnect), which answers AcceptGuestConnect(ok): the
//    device then sends RESPONSE or RST.
// A connection is keyed by (host port, guest port), so several guest
// connections to one host port coexist.
//
// Credit (virtio 1.2, 5.10.6.3), both directions:
//  * host -> guest: the backend only Sends what SendCredit allows (the
//    guest's buf_alloc minus what is in flight, and never more than the rx
//    buffers the guest has posted can take: rx_room_).
//  * guest -> host: the device buffers up to kHostBufAlloc bytes per
//    connection; the backend drains them into the host socket
//    (DrainToHost) and fwd_cnt counts only bytes the host socket took. A
//    CREDIT_UPDATE goes out when bytes were drained and the guest, by what it
//    last heard, has used half its credit or more; a guest that sends beyond its
//    credit gets the connection reset.
// Shutdown: SHUTDOWN flags accumulate (RCV=1: the guest takes no more
// bytes; SEND=2: it sends no more, the host socket gets shutdown(SHUT_WR)
// once the buffered bytes are written). Host EOF sends SHUTDOWN(SEND) to
// the guest. When both directions are done (the guest shut SEND and either
// shut RCV or the host reached EOF) and the buffer is drained, the device
// sends RST and forgets the connection.
// Close timeout: a close that waits on the guest is bounded. Once the host
// socket is gone both ways (HostGone: the guest hears SHUTDOWN(RCV|SEND)) or
// the guest shut down both ways while its bytes still wait for the host
// socket, the connection has kCloseTimeout without progress (bytes moving
// either way restart it) to finish; then ExpireCloses sends RST and forgets
// it. An established connection whose guest merely stops reading is never
// timed out: only a full shutdown from one side arms the timer.
// Restore: connections are never saved, so a restore queues a
// TRANSPORT_RESET event, and the guest then resets every connection it has
// (Linux: virtio_transport_event_work handles the event, resetting every
// connected socket, then re-posts the buffer and kicks the event queue). A
// host REQUEST that reached the guest before it handled the event would be
// accepted and then reset with the others, so after a restore host-initiated
// connections are held (their REQUEST not sent) until the guest has
// acknowledged the reset: the event went out and the guest made a new event
// buffer available. A hold is bounded by kConnectTimeout from Connect: a guest
// that never acknowledges gets nothing sent and the connection forgotten at
// the deadline (ExpireCloses), as for an unanswered REQUEST; a released
// REQUEST then has its own kConnectTimeout for the answer. Until then the
// guest knows nothing of a held pair, so whatever it sends on it is from a
// connection before the restore (still open in the template, or left in its
// tx ring at the snapshot) and is reset as an unknown pair's, never applied
// to the held connect.
//
// Locking: the transport calls ProcessQueue with its lock held; the device
// then takes its own lock and calls Backend with neither... except the
// transport's, so a Backend must never call into the transport or the
// device from those callbacks (VsockMuxer only queues events for its own
// thread). The host-side methods below take the device lock only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <compare>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "forkd/vmm/devices/rate_limiter.h"
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
inline constexpr uint32_t kVsockShutdownRcv = 1;
inline constexpr uint32_t kVsockShutdownSend = 2;

// One connection: the host side's port and the guest's.
struct VsockConnKey {
  uint32_t local_port = 0;
  uint32_t guest_port = 0;
  // clang-tidy 14 mistakes the defaulted <=> for a literal 0 compared to a pointer.
  auto operator<=>(const VsockConnKey&) const = default;  // NOLINT(modernize-use-nullptr)
};

class VsockBackend {
 public:
  virtual ~VsockBackend() = default;
  // The guest accepted the host-initiated connection `key`.
  virtual void OnConnected(VsockConnKey key) = 0;
  // The guest asks for a connection to host port key.local_port from its
  // port key.guest_port; answer with Vsock::AcceptGuestConnect.
  virtual void OnGuestConnect(VsockConnKey key) = 0;
  // Something the backend polls for changed: guest bytes wait in the
  // device, credit arrived, or a shutdown needs doing.
  virtual void OnActivity() = 0;
  // The connection is gone on the guest's side (RST, finished shutdown,
  // protocol violation, device reset).
  virtual void OnClosed(VsockConnKey key) = 0;
};

class Vsock : public VirtioDevice {
 public:
  static constexpr const char* kName = "virtio-vsock";
  static constexpr uint32_t kDeviceId = 19;
  static constexpr uint16_t kQueueSize = 256;
  // What the host side buffers per connection for guest data (buf_alloc).
  static constexpr uint32_t kHostBufAlloc = 256 * 1024;
  // Guest-provoked replies waiting for rx buffers (see PushControlLocked).
  static constexpr size_t kMaxQueuedControl = 256;
  // Cap on rx_room_ (host bytes read ahead of delivery).
  static constexpr uint64_t kMaxRxRoom = 1024 * 1024;
  // Connections at once (each one holds a host socket).
  static constexpr size_t kMaxConnections = 1024;
  // How long a closing connection may stand still (Firecracker's value).
  static constexpr std::chrono::milliseconds kCloseTimeout{2000};
  // How long a host-initiated REQUEST may go unanswered (Firecracker's).
  static constexpr std::chrono::milliseconds kConnectTimeout{2000};

  using TimePoint = std::chrono::steady_clock::time_point;
  using Clock = std::function<TimePoint()>;
  // `clock` (steady_clock by default) times the close and connect
  // timeouts and the rate limit; tests pass their own. `limit` limits the
  // packets both ways (ops) and their payload bytes; set, it also wins over
  // a restored snapshot's (unset: unlimited on boot, the snapshot's on
  // restore).
  Vsock(uint64_t guest_cid, VsockBackend* backend, Clock clock = {},
        std::optional<RateLimiterConfig> limit = std::nullopt)
      : guest_cid_(guest_cid),
        backend_(backend),
        clock_(clock ? std::move(clock) : Clock(&std::chrono::steady_clock::now)),
        limiter_(limit.value_or(RateLimiterConfig{}), clock_),
        limit_pinned_(limit.has_value()) {}

  uint32_t device_id() const override { return kDeviceId; }
  std::vector<uint16_t> queue_max_sizes() const override {
    return {kQueueSize, kQueueSize, kQueueSize};
  }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) const override;
  absl::StatusOr<bool> ProcessQueue(size_t index, std::span<Queue> queues,
                                    const GuestMemory& mem) override;
  void Reset() override;
  // The guest CID and the rate limit; connections are never saved (their host sockets do not
  // survive a snapshot), so a restore queues a TRANSPORT_RESET event that
  // tells the guest every connection it had is gone.
  std::vector<uint8_t> SaveSpecific() const override;
  absl::Status RestoreSpecific(std::span<const uint8_t> bytes) override;

  // Host side (any thread; then kick the rx queue through the transport so
  // queued packets reach the guest).
  // Starts a connection from host key.local_port to guest key.guest_port;
  // false when that pair is taken (e.g. by a guest's own connection). The
  // guest has kConnectTimeout to answer (see ExpireCloses). After a
  // restore the REQUEST waits until the guest acknowledged the transport
  // reset (see the header comment), at most kConnectTimeout.
  bool Connect(VsockConnKey key);
  // Answers OnGuestConnect: RESPONSE when ok, else RST. False when the
  // connection is not (or no longer) the device's: refused, or its
  // RESPONSE found the reply queue full (a guest not posting rx buffers).
  bool AcceptGuestConnect(VsockConnKey key, bool ok);
  // How many bytes the guest can take now on this connection (0 if none).
  uint32_t SendCredit(VsockConnKey key) const;
  // Queues bytes for the guest; the caller respects SendCredit.
  void Send(VsockConnKey key, std::span<const uint8_t> bytes);
  // The host socket reached EOF: SHUTDOWN(SEND) to the guest. True when
  // that finished the connection (the device forgot it, RST sent).
  bool HostEof(VsockConnKey key);
  // The host side failed or closed: RST and forget the connection.
  void Close(VsockConnKey key);
  // The host socket is closed both ways (POLLHUP: the peer closed it):
  // SHUTDOWN(RCV) to the guest, on top of the SHUTDOWN(SEND) its EOF sent,
  // and the close timeout starts. Bytes the host wrote before closing still
  // reach the guest as its credit allows. True when the device forgot the
  // connection (the reply queue was full).
  bool HostGone(VsockConnKey key);
  // RST and forget every closing connection past its close deadline and
  // every host-initiated one the guest has not answered by its connect
  // deadline; returns them (the backend is not called: the caller closes
  // their sockets).
  std::vector<VsockConnKey> ExpireCloses();
  // Time until the next close or connect deadline (zero when one is past),
  // none when no connection is closing or waiting for the guest's answer.
  std::optional<std::chrono::nanoseconds> TimeToNextClose() const;

  // Packets waiting for guest rx buffers (bounded: see PushControlLocked).
  size_t queued_for_guest() const;
  // Host connects held until the guest acknowledges a restore's transport
  // reset (REQUEST not sent yet).
  size_t held_connects() const;
  RateLimiterConfig limit() const;

  // Whether guest bytes or a write shutdown wait for the host socket.
  bool HasToHost(VsockConnKey key) const;
  struct DrainResult {
    bool shut_write = false;  // shutdown(SHUT_WR) the host socket now
    bool closed = false;      // the device forgot the connection (RST sent)
  };
  // Hands buffered guest bytes to `write`, which returns how many it took
  // (0: would block) or -1 on error (the connection is then reset).
  DrainResult DrainToHost(VsockConnKey key,
                          const std::function<ssize_t(std::span<const uint8_t>)>& write);

 private:
  struct Connection {
    bool established = false;
    bool guest_initiated = false;
    uint32_t peer_buf_alloc = 0;
    uint32_t peer_fwd_cnt = 0;
    uint32_t peer_shutdown = 0;  // kVsockShutdown* flags the guest sent
    bool host_eof = false;
    bool host_gone = false;  // HostGone: SHUTDOWN(RCV) sent
    bool shut_write_done = false;
    std::optional<TimePoint> close_deadline;    // closing: see kCloseTimeout
    std::optional<TimePoint> connect_deadline;  // REQUEST held or sent, unanswered
    bool request_held = false;                  // REQUEST not sent: see Connect
    uint32_t tx_cnt = 0;                        // bytes queued for the guest
    uint32_t rx_cnt = 0;                        // bytes received from the guest
    uint32_t fwd_cnt = 0;                       // guest bytes written to the host socket
    uint32_t fwd_cnt_sent = 0;                  // fwd_cnt the guest last heard
    bool credit_update_queued = false;
    std::vector<uint8_t> to_host;  // guest bytes not yet written
    size_t to_host_head = 0;
    size_t buffered() const { return to_host.size() - to_host_head; }
  };
  struct Packet {
    VsockHeader hdr;
    std::vector<uint8_t> payload;
  };
  enum class EventKind { kConnected, kGuestConnect, kClosed };
  // What a tx batch tells the backend, in the order it happened.
  struct TxResult {
    std::vector<std::pair<EventKind, VsockConnKey>> events;
    bool activity = false;
  };
  VsockHeader HeaderLocked(VsockConnKey key, uint16_t op) const;
  void RstLocked(VsockConnKey key);
  // Forgets a connection the guest reset or broke, and drops every packet
  // still queued for it (the guest must not hear of it again, and a guest
  // churning REQUEST/RST must not pile up replies); the caller tells the
  // backend.
  void ForgetLocked(VsockConnKey key);
  // RST and forget; the caller tells the backend.
  void ResetConnLocked(VsockConnKey key);
  // Every packet without payload the device queues (RST, RESPONSE,
  // SHUTDOWN, CREDIT_UPDATE; host-initiated REQUESTs excepted, the host
  // makes those) counts against kMaxQueuedControl: false when it is full
  // and the packet was dropped (the caller then gives the connection up, or
  // for a credit update simply lets the guest ask again).
  bool PushControlLocked(const VsockHeader& h);
  // Recomputes rx_room_ from the rx buffers the guest has posted.
  absl::Status MeasureRxRoomLocked(Queue& rx, const GuestMemory& mem);
  void MaybeCreditUpdateLocked(VsockConnKey key, Connection& c);
  // RST and forget once both directions are done and nothing is buffered.
  bool MaybeFinishLocked(VsockConnKey key, Connection& c);
  // Arms the close timeout (again, from now) when `c` is closing.
  void MaybeArmCloseLocked(Connection& c);
  // The earlier of the close and connect deadlines, if any.
  static std::optional<TimePoint> DeadlineOf(const Connection& c);
  absl::StatusOr<bool> DeliverEventLocked(Queue& event, const GuestMemory& mem);
  // Whether host REQUESTs wait for the guest's reset acknowledgement.
  bool HoldingConnectsLocked() const { return reset_event_pending_ || reset_unacked_; }
  // Once the guest made a new event buffer available after the reset event,
  // sends the held REQUESTs (each with a fresh connect deadline).
  absl::Status MaybeReleaseConnectsLocked(Queue& event, const GuestMemory& mem);
  absl::StatusOr<bool> DeliverLocked(Queue& rx, const GuestMemory& mem);
  absl::Status HandleTxLocked(Queue& tx, const GuestMemory& mem, TxResult* out);
  void HandlePacketLocked(const VsockHeader& h, std::span<const uint8_t> payload, TxResult* out);

  uint64_t guest_cid_;  // set again by RestoreSpecific
  VsockBackend* const backend_;
  const Clock clock_;
  mutable std::mutex mu_;
  std::map<VsockConnKey, Connection> conns_;
  std::deque<Packet> to_guest_;
  // Payload bytes the guest's posted rx buffers can still take beyond what
  // is queued: host bytes are read only into those (Firecracker's rule), so
  // a guest that posts no buffers makes the host hold nothing.
  uint64_t rx_room_ = 0;
  // Guest packets (tx) and data packets to the guest (rx): a refused tx
  // chain stays available, a refused data packet stays queued, and the
  // queue is retried when the tokens are back.
  RateLimiter limiter_;
  const bool limit_pinned_;
  bool reset_event_pending_ = false;
  // The reset event went out; the guest has not re-posted an event buffer
  // since. event_available_after_reset_: the buffers still available then.
  bool reset_unacked_ = false;
  uint16_t event_available_after_reset_ = 0;
  // Connections whose REQUEST is held, in Connect order; a connection leaves
  // it when released, expired, closed or forgotten.
  std::vector<VsockConnKey> held_;
};

}  // namespace forkd::vmm::virtio
