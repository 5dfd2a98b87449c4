#include "agent/framing.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace forkd::agent {
namespace {

constexpr size_t kHeaderBytes = 4;

// Waits until `fd` is ready for `events` or the deadline passes.
absl::Status WaitReady(int fd, short events, Deadline deadline) {
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) return absl::DeadlineExceededError("deadline passed");
    // Round up so we never spin with a 0 ms timeout while time remains.
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    pollfd pfd{.fd = fd, .events = events, .revents = 0};
    const int n = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left, INT_MAX)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "poll");
    }
    // POLLHUP/POLLERR: let the following recv/send report what happened.
    if (n > 0) return absl::OkStatus();
  }
}

bool IsPeerGone(int err) { return err == ECONNRESET || err == EPIPE || err == ENOTCONN; }

// Reads exactly buf.size() bytes. `got_before` is how many bytes of the current
// frame were already read, to tell a clean close from a truncated frame.
absl::Status ReadExact(int fd, char* buf, size_t len, Deadline deadline, size_t got_before) {
  size_t got = 0;
  while (got < len) {
    FORKD_RETURN_IF_ERROR(WaitReady(fd, POLLIN, deadline));
    const ssize_t n = ::recv(fd, buf + got, len - got, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (IsPeerGone(errno)) return absl::UnavailableError(ErrnoStatus(errno, "recv").message());
      return ErrnoStatus(errno, "recv");
    }
    if (n == 0) {
      const size_t total = got_before + got;
      if (total == 0) return absl::UnavailableError("connection closed");
      return absl::UnavailableError(
          absl::StrCat("truncated frame: peer closed after ", total, " bytes"));
    }
    got += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteAll(int fd, std::string_view bytes, Deadline deadline) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    FORKD_RETURN_IF_ERROR(WaitReady(fd, POLLOUT, deadline));
    const ssize_t n =
        ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (IsPeerGone(errno)) return absl::UnavailableError(ErrnoStatus(errno, "send").message());
      return ErrnoStatus(errno, "send");
    }
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFrame(int fd, Deadline deadline, uint32_t max_bytes) {
  unsigned char header[kHeaderBytes];
  FORKD_RETURN_IF_ERROR(ReadExact(fd, reinterpret_cast<char*>(header), kHeaderBytes, deadline, 0));
  const uint32_t len = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) |
                       (uint32_t{header[2]} << 8) | uint32_t{header[3]};
  if (len > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("frame of ", len, " bytes exceeds the maximum of ", max_bytes));
  }
  std::string payload(len, '\0');
  FORKD_RETURN_IF_ERROR(ReadExact(fd, payload.data(), len, deadline, kHeaderBytes));
  return payload;
}

absl::Status WriteFrame(int fd, std::string_view payload, Deadline deadline, uint32_t max_bytes) {
  if (payload.size() > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("refusing to send a frame of ", payload.size(),
                                                     " bytes (maximum ", max_bytes, ")"));
  }
  const auto len = static_cast<uint32_t>(payload.size());
  std::string frame;
  frame.reserve(kHeaderBytes + payload.size());
  frame.push_back(static_cast<char>(len >> 24));
  frame.push_back(static_cast<char>(len >> 16));
  frame.push_back(static_cast<char>(len >> 8));
  frame.push_back(static_cast<char>(len));
  frame.append(payload);
  return WriteAll(fd, frame, deadline);
}

}  // namespace forkd::agent
