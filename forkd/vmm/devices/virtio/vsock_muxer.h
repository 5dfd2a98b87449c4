// Host side of virtio-vsock, Firecracker's convention:
//  * host-initiated: a host process connects to the unix socket at `path`,
//    writes "CONNECT <port>\n", gets "OK <local port>\n" once the guest
//    accepted (nothing, the socket closed, if it refused), then bytes flow.
//  * guest-initiated: a guest connection to host port P connects
//    (non-blocking) to the unix socket `<path>_P`; RESPONSE when that
//    worked, RST when not.
// One thread owns every host socket: it polls the listener, the pending
// handshakes and each connection (POLLIN while the guest has credit for
// host bytes, POLLOUT while guest bytes wait in the device), and runs the
// device's callbacks, which the queue-processing thread only queues. Host EOF becomes
// SHUTDOWN(SEND) to the guest; a guest SHUTDOWN(SEND) becomes
// shutdown(SHUT_WR) once its bytes are written; a host socket closed both
// ways (POLLHUP, watched while nothing else is polled) becomes HostGone, and
// the poll timeout follows the device's close and connect deadlines
// (ExpireCloses): a CONNECT the guest never answers is closed after
// Vsock::kConnectTimeout (the host sees EOF without "OK"), and one whose
// host socket closes (POLLHUP) while the guest has not answered is reset at
// once. The socket closes when the device forgets the connection.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/vmm/devices/virtio/vsock.h"

namespace forkd::vmm::virtio {

class VsockMuxer : public VsockBackend {
 public:
  // Binds and listens on `uds_path` (which must not exist).
  static absl::StatusOr<std::unique_ptr<VsockMuxer>> Listen(const std::string& uds_path);
  // Stops the thread and unlinks the socket path.
  ~VsockMuxer() override;

  // Starts serving; `kick_rx` processes the device's rx queue (through the
  // transport, so the transport's lock is taken). `on_fatal` hears why the
  // thread ended on its own (poll failed): every host connection is dead,
  // and the Machine stops the VM.
  using FatalFn = std::function<void(const absl::Status&)>;
  void Start(Vsock* device, std::function<void()> kick_rx, FatalFn on_fatal = {});

  // Queued for the poll thread (never blocks, takes no device lock).
  void OnConnected(VsockConnKey key) override;
  void OnGuestConnect(VsockConnKey key) override;
  void OnActivity() override;
  void OnClosed(VsockConnKey key) override;

 private:
  enum class EventKind { kConnected, kGuestConnect, kClosed };
  struct Event {
    EventKind kind;
    VsockConnKey key;
  };
  // Poll-thread state of one connection.
  struct Conn {
    UniqueFd fd;
    bool ok_pending = false;  // host-initiated, accepted: "OK" not written yet
    bool ready = false;       // bytes may flow
    bool host_eof = false;
    bool host_gone = false;  // POLLHUP seen and reported
  };
  struct Pending {
    UniqueFd fd;
    std::string line;
  };

  VsockMuxer(std::string path, UniqueFd listener, UniqueFd wake)
      : path_(std::move(path)), listener_(std::move(listener)), wake_(std::move(wake)) {}
  void Run();
  // The loop; an error ends the thread (reported by Run).
  absl::Status Loop();
  void Wake();
  void HandleEvents();
  void GuestConnect(VsockConnKey key);
  void AcceptOne();
  // Reads the CONNECT line of a pending connection; true when it is done
  // (connecting or refused).
  bool ReadHandshake(Pending& p);
  // Both false when the connection is gone.
  bool ForwardToGuest(VsockConnKey key, Conn& c);
  bool ForwardToHost(VsockConnKey key, Conn& c);
  uint32_t NextLocalPort();
  // Forgets connections the device timed out; returns the poll timeout
  // (ms, -1: none) until the next close or connect deadline.
  int ExpireCloses();

  const std::string path_;
  UniqueFd listener_;
  UniqueFd wake_;
  Vsock* device_ = nullptr;
  std::function<void()> kick_rx_;
  FatalFn on_fatal_;
  std::thread thread_;
  std::mutex mu_;  // guards events_ and stop_
  std::deque<Event> events_;
  bool stop_ = false;
  // Poll thread only.
  std::map<VsockConnKey, Conn> conns_;
  std::map<int, Pending> pending_;  // before CONNECT, by fd
  // Host ports for host-initiated connections: [kFirstLocalPort, 2^32),
  // above any port a guest listens on or connects to, starting at a random
  // one. A restored fork's forkd-vmm is a new process: counting from a fixed
  // start, its first connect would repeat the pair of the template's last
  // connection, which the guest still holds open until it handles the
  // restore's TRANSPORT_RESET (vsock.h, "Restore").
  static constexpr uint32_t kFirstLocalPort = 1u << 30;
  uint32_t next_port_ = kFirstLocalPort;
};

}  // namespace forkd::vmm::virtio
