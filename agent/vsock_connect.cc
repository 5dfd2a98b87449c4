#include "agent/vsock_connect.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace forkd::agent {
namespace {

// "OK 1073741824\n" is 14 bytes; anything much longer is not the multiplexer.
constexpr size_t kMaxReplyBytes = 64;

// Reads the reply one byte at a time so that no byte after the newline (the
// guest's first protocol bytes) is consumed here.
absl::StatusOr<std::string> ReadLine(int fd, Deadline deadline) {
  std::string line;
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) return absl::DeadlineExceededError("vsock multiplexer did not answer");
    pollfd pfd{.fd = fd, .events = POLLIN, .revents = 0};
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    const int n = ::poll(&pfd, 1, static_cast<int>(left));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "poll vsock multiplexer");
    }
    if (n == 0) continue;
    char c;
    const ssize_t r = ::recv(fd, &c, 1, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ErrnoStatus(errno, "recv from vsock multiplexer");
    }
    if (r == 0) {
      return absl::UnavailableError(
          absl::StrCat("vsock multiplexer closed the connection after '", line, "'"));
    }
    if (c == '\n') return line;
    line.push_back(c);
    if (line.size() > kMaxReplyBytes) {
      return absl::DataLossError("vsock multiplexer reply is too long");
    }
  }
}

}  // namespace

absl::StatusOr<UniqueFd> ConnectVsockMux(const std::string& uds_path, uint32_t port,
                                         Deadline deadline) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (uds_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("unix socket path too long: ", uds_path));
  }
  std::memcpy(addr.sun_path, uds_path.c_str(), uds_path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return ErrnoStatus(errno, "socket AF_UNIX");
  // A blocking unix connect waits, with no bound, while the listener's
  // backlog is full. Non-blocking, it fails with EAGAIN instead, and no
  // event says when there is room: retried until the deadline.
  while (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      const auto now = Clock::now();
      if (now >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("connect ", uds_path, ": the multiplexer's backlog stayed full"));
      }
      std::this_thread::sleep_for(
          std::min<Clock::duration>(deadline - now, std::chrono::milliseconds(5)));
      continue;
    }
    const auto s = ErrnoStatus(err, absl::StrCat("connect ", uds_path));
    if (err == ECONNREFUSED || err == ENOENT) return absl::UnavailableError(s.message());
    return s;
  }
  // The caller gets a blocking socket, as before; the handshake below
  // polls with the deadline.
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return ErrnoStatus(errno, "fcntl vsock multiplexer socket");
  }
  FORKD_RETURN_IF_ERROR(WriteAll(fd.get(), absl::StrCat("CONNECT ", port, "\n"), deadline));
  FORKD_ASSIGN_OR_RETURN(std::string reply, ReadLine(fd.get(), deadline));
  if (reply.rfind("OK ", 0) != 0) {
    return absl::DataLossError(
        absl::StrCat("vsock multiplexer answered '", reply, "' to CONNECT ", port));
  }
  return fd;
}

}  // namespace forkd::agent
