#include "forkd/dns/upstream.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/errno_status.h"

namespace forkd::dns {
namespace {

// The largest DNS message (TCP length prefix is 16 bits).
constexpr size_t kMaxMessage = 65535;

}  // namespace

absl::StatusOr<UpstreamExchange> UpstreamExchange::StartUdp(const SocketAddress& server,
                                                            std::span<const uint8_t> query) {
  UniqueFd fd(::socket(server.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus(errno, "upstream UDP socket");
  // connect(): the kernel then delivers only datagrams from the server itself.
  if (::connect(fd.get(), server.get(), server.length) != 0) {
    return ErrnoStatus(errno, "connect upstream UDP socket");
  }
  if (::send(fd.get(), query.data(), query.size(), 0) != static_cast<ssize_t>(query.size())) {
    return ErrnoStatus(errno, "send query upstream");
  }
  return UpstreamExchange(std::move(fd), server, std::vector<uint8_t>(query.begin(), query.end()));
}

absl::Status UpstreamExchange::SwitchToTcp() {
  UniqueFd fd(::socket(server_.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus(errno, "upstream TCP socket");
  if (::connect(fd.get(), server_.get(), server_.length) != 0 && errno != EINPROGRESS) {
    return ErrnoStatus(errno, "connect upstream over TCP");
  }
  fd_ = std::move(fd);
  buffer_.clear();
  buffer_.push_back(static_cast<uint8_t>(query_.size() >> 8));
  buffer_.push_back(static_cast<uint8_t>(query_.size() & 0xff));
  buffer_.insert(buffer_.end(), query_.begin(), query_.end());
  done_ = 0;
  state_ = State::kTcpConnecting;
  return absl::OkStatus();
}

uint32_t UpstreamExchange::events() const {
  return state_ == State::kTcpConnecting || state_ == State::kTcpWriting ? EPOLLOUT : EPOLLIN;
}

absl::StatusOr<std::optional<std::vector<uint8_t>>> UpstreamExchange::OnReady() {
  switch (state_) {
    case State::kUdp: {
      std::vector<uint8_t> datagram(kMaxMessage);
      const ssize_t n = ::recv(fd_.get(), datagram.data(), datagram.size(), 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return std::nullopt;
        return ErrnoStatus(errno, "receive upstream answer");
      }
      datagram.resize(static_cast<size_t>(n));
      return datagram;
    }
    case State::kTcpConnecting: {
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        return ErrnoStatus(errno, "getsockopt(SO_ERROR) upstream TCP");
      }
      if (err != 0) return ErrnoStatus(err, "connect upstream over TCP");
      state_ = State::kTcpWriting;
      return TcpWrite();
    }
    case State::kTcpWriting:
      return TcpWrite();
    case State::kTcpReading:
      return TcpRead();
  }
  return absl::InternalError("upstream exchange in an unknown state");
}

absl::StatusOr<std::optional<std::vector<uint8_t>>> UpstreamExchange::TcpWrite() {
  while (done_ < buffer_.size()) {
    const ssize_t n =
        ::send(fd_.get(), buffer_.data() + done_, buffer_.size() - done_, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return std::nullopt;
      return ErrnoStatus(errno, "send query upstream over TCP");
    }
    done_ += static_cast<size_t>(n);
  }
  buffer_.clear();
  done_ = 0;
  state_ = State::kTcpReading;
  return std::nullopt;
}

absl::StatusOr<std::optional<std::vector<uint8_t>>> UpstreamExchange::TcpRead() {
  for (;;) {
    // First the 2-byte length, then exactly that many bytes.
    size_t want = 2;
    if (buffer_.size() >= 2) {
      const size_t length = (size_t{buffer_[0]} << 8) | size_t{buffer_[1]};
      if (length == 0) return absl::InvalidArgumentError("upstream sent an empty TCP message");
      want = 2 + length;
      if (buffer_.size() == want) return std::vector<uint8_t>(buffer_.begin() + 2, buffer_.end());
    }
    uint8_t chunk[4096];
    const size_t room = std::min(sizeof(chunk), want - buffer_.size());
    const ssize_t n = ::recv(fd_.get(), chunk, room, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return std::nullopt;
      return ErrnoStatus(errno, "receive upstream answer over TCP");
    }
    if (n == 0) return absl::UnavailableError("upstream closed the TCP connection early");
    buffer_.insert(buffer_.end(), chunk, chunk + n);
  }
}

}  // namespace forkd::dns
