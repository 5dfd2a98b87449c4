// One query's conversation with the upstream server, non-blocking, driven by
// the proxy's poll loop: a fresh UDP socket per query (so a new random source
// port as well as a random id), then a TCP connection if the UDP answer came
// back truncated.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/dns/socket_address.h"

namespace forkd::dns {

class UpstreamExchange {
 public:
  // Opens a connected UDP socket to `server` and sends `query`.
  static absl::StatusOr<UpstreamExchange> StartUdp(const SocketAddress& server,
                                                   std::span<const uint8_t> query);

  // Replaces the socket with a non-blocking TCP connection to the same server
  // that will carry `query` (length-prefixed) once connected.
  absl::Status SwitchToTcp();

  int fd() const { return fd_.get(); }
  bool tcp() const { return state_ != State::kUdp; }
  // The epoll events the exchange waits for now (EPOLLIN or EPOLLOUT).
  uint32_t events() const;

  // Does the I/O the socket is ready for. Returns a whole upstream message
  // when one arrived (UDP: one datagram, which may still be a spoof the
  // caller rejects and keeps waiting past), nullopt when more I/O is needed.
  absl::StatusOr<std::optional<std::vector<uint8_t>>> OnReady();

 private:
  enum class State { kUdp, kTcpConnecting, kTcpWriting, kTcpReading };
  UpstreamExchange(UniqueFd fd, SocketAddress server, std::vector<uint8_t> query)
      : fd_(std::move(fd)), server_(server), query_(std::move(query)) {}
  absl::StatusOr<std::optional<std::vector<uint8_t>>> TcpWrite();
  absl::StatusOr<std::optional<std::vector<uint8_t>>> TcpRead();

  UniqueFd fd_;
  SocketAddress server_;
  std::vector<uint8_t> query_;
  State state_ = State::kUdp;
  std::vector<uint8_t> buffer_;  // TCP: what is still to write, then what was read
  size_t done_ = 0;
};

}  // namespace forkd::dns
