// Host side of virtio-vsock, Firecracker's convention: a unix socket
// listener at a path; a host process connects, writes "CONNECT <port>\n",
// gets "OK <local port>\n" once the guest accepted, then bytes flow both
// ways. One thread polls the listener and every connection.
//
// Guest -> host bytes are written to the host socket on the vCPU thread
// (non-blocking); a host socket that cannot take them gets the connection
// reset. Host -> guest bytes are read only while the guest has credit.
#pragma once

#include <cstdint>
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
  // transport, so the transport's lock is taken).
  void Start(Vsock* device, std::function<void()> kick_rx);

  void OnConnected(uint32_t local_port) override;
  bool OnData(uint32_t local_port, std::span<const uint8_t> bytes) override;
  void OnClosed(uint32_t local_port) override;

 private:
  VsockMuxer(std::string path, UniqueFd listener, UniqueFd wake)
      : path_(std::move(path)), listener_(std::move(listener)), wake_(std::move(wake)) {}
  void Run();
  void Wake();
  void AcceptOne();
  // Reads the CONNECT line of a pending connection; true when it is done
  // (accepted or refused).
  bool ReadHandshake(int fd, std::string* line);
  bool ForwardToGuest(uint32_t port, int fd);

  const std::string path_;
  UniqueFd listener_;
  UniqueFd wake_;
  Vsock* device_ = nullptr;
  std::function<void()> kick_rx_;
  std::thread thread_;
  std::mutex mu_;
  // Shared so the poll thread keeps an fd open while the vCPU thread drops it.
  std::map<uint32_t, std::shared_ptr<UniqueFd>> conns_;  // established or connecting
  std::map<int, std::pair<std::shared_ptr<UniqueFd>, std::string>> pending_;  // before CONNECT
  uint32_t next_port_ = 1u << 30;
  bool stop_ = false;
};

}  // namespace forkd::vmm::virtio
