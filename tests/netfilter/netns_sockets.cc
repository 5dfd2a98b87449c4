#include "tests/netfilter/netns_sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/errno_status.h"
#include "netfilter/netns.h"

namespace forkd::testing {
namespace {

bool IsV6(const std::string& addr) { return addr.find(':') != std::string::npos; }

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

SockAddr Addr(const std::string& addr, uint16_t port) {
  SockAddr out;
  if (IsV6(addr)) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&out.storage);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(port);
    ::inet_pton(AF_INET6, addr.c_str(), &sa->sin6_addr);
    out.len = sizeof(sockaddr_in6);
  } else {
    auto* sa = reinterpret_cast<sockaddr_in*>(&out.storage);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    ::inet_pton(AF_INET, addr.c_str(), &sa->sin_addr);
    out.len = sizeof(sockaddr_in);
  }
  return out;
}

absl::StatusOr<UniqueFd> SocketIn(int netns, int type, bool v6) {
  auto guard = netfilter::NetnsGuard::Enter(netns);
  if (!guard.ok()) return guard.status();
  UniqueFd fd(::socket(v6 ? AF_INET6 : AF_INET, type | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus(errno, "socket");
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Lets a guest socket send from an address it does not own (the spoofing
  // tests); IP_FREEBIND alone would still fail the source route lookup.
  if (v6) {
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_TRANSPARENT, &one, sizeof(one));
  } else {
    ::setsockopt(fd.get(), IPPROTO_IP, IP_TRANSPARENT, &one, sizeof(one));
  }
  return fd;
}

absl::Status Bind(int fd, const std::string& addr, uint16_t port) {
  const SockAddr sa = Addr(addr, port);
  if (::bind(fd, sa.get(), sa.len) != 0) {
    return ErrnoStatus(errno, "bind " + addr + ":" + std::to_string(port));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ToString(Reach r) {
  switch (r) {
    case Reach::kConnected:
      return "connected";
    case Reach::kRefused:
      return "refused";
    case Reach::kTimedOut:
      return "timed out (dropped)";
    case Reach::kError:
      return "error";
  }
  return "?";
}

absl::Status WriteSysctl(int netns, const std::string& path, const std::string& value) {
  auto guard = netfilter::NetnsGuard::Enter(netns);
  if (!guard.ok()) return guard.status();
  std::ofstream f("/proc/sys/" + path);
  f << value;
  f.close();
  if (!f) return absl::InternalError("write sysctl " + path);
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> TcpListen(int netns, const std::string& addr, uint16_t port) {
  auto fd = SocketIn(netns, SOCK_STREAM, IsV6(addr));
  if (!fd.ok()) return fd.status();
  FORKD_RETURN_IF_ERROR(Bind(fd->get(), addr, port));
  if (::listen(fd->get(), 64) != 0) return ErrnoStatus(errno, "listen");
  return fd;
}

Reach TcpConnect(int netns, const std::string& dst, uint16_t port, const std::string& src,
                 std::chrono::milliseconds wait) {
  auto fd = SocketIn(netns, SOCK_STREAM | SOCK_NONBLOCK, IsV6(dst));
  if (!fd.ok()) return Reach::kError;
  if (!src.empty() && !Bind(fd->get(), src, 0).ok()) return Reach::kError;
  const SockAddr sa = Addr(dst, port);
  if (::connect(fd->get(), sa.get(), sa.len) == 0) {
    return Reach::kConnected;
  }
  if (errno == ECONNREFUSED) return Reach::kRefused;
  if (errno != EINPROGRESS) return Reach::kError;
  pollfd p{fd->get(), POLLOUT, 0};
  const int n = ::poll(&p, 1, static_cast<int>(wait.count()));
  if (n == 0) return Reach::kTimedOut;
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(fd->get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err == 0) return Reach::kConnected;
  if (err == ECONNREFUSED) return Reach::kRefused;
  return Reach::kError;
}

absl::StatusOr<UniqueFd> UdpBind(int netns, const std::string& addr, uint16_t port) {
  auto fd = SocketIn(netns, SOCK_DGRAM, IsV6(addr));
  if (!fd.ok()) return fd.status();
  FORKD_RETURN_IF_ERROR(Bind(fd->get(), addr, port));
  return fd;
}

absl::Status UdpSend(int netns, const std::string& dst, uint16_t port, const std::string& payload,
                     const std::string& src) {
  auto fd = SocketIn(netns, SOCK_DGRAM, IsV6(dst));
  if (!fd.ok()) return fd.status();
  if (!src.empty()) FORKD_RETURN_IF_ERROR(Bind(fd->get(), src, 0));
  const SockAddr sa = Addr(dst, port);
  if (::sendto(fd->get(), payload.data(), payload.size(), 0, sa.get(), sa.len) < 0) {
    return ErrnoStatus(errno, "sendto " + dst);
  }
  return absl::OkStatus();
}

bool UdpReceives(int sock, const std::string& payload, std::chrono::milliseconds wait,
                 std::string* from) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{sock, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[2048];
    sockaddr_storage sender{};
    socklen_t len = sizeof(sender);
    const ssize_t n =
        ::recvfrom(sock, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&sender), &len);
    if (n >= 0 && std::string(buf, static_cast<size_t>(n)) == payload) {
      if (from != nullptr) {
        char text[INET6_ADDRSTRLEN] = {};
        if (sender.ss_family == AF_INET6) {
          ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&sender)->sin6_addr, text,
                      sizeof(text));
        } else {
          ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&sender)->sin_addr, text,
                      sizeof(text));
        }
        *from = text;
      }
      return true;
    }
  }
}

absl::StatusOr<UniqueFd> TcpOpen(int netns, const std::string& dst, uint16_t port,
                                 std::chrono::milliseconds wait) {
  auto fd = SocketIn(netns, SOCK_STREAM | SOCK_NONBLOCK, IsV6(dst));
  if (!fd.ok()) return fd.status();
  const SockAddr sa = Addr(dst, port);
  if (::connect(fd->get(), sa.get(), sa.len) != 0) {
    if (errno != EINPROGRESS) return ErrnoStatus(errno, "connect " + dst);
    pollfd p{fd->get(), POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) != 1) {
      return absl::DeadlineExceededError("connect " + dst + " timed out");
    }
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd->get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return ErrnoStatus(err, "connect " + dst);
  }
  const int flags = ::fcntl(fd->get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd->get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return ErrnoStatus(errno, "make socket blocking");
  }
  return fd;
}

absl::StatusOr<UniqueFd> TcpAccept(int listen_fd, std::chrono::milliseconds wait) {
  pollfd p{listen_fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(wait.count())) != 1) {
    return absl::DeadlineExceededError("no connection to accept");
  }
  UniqueFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "accept");
  return fd;
}

absl::Status StreamSend(int fd, const std::string& payload) {
  if (::send(fd, payload.data(), payload.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(payload.size())) {
    return ErrnoStatus(errno, "send");
  }
  return absl::OkStatus();
}

bool StreamReceives(int fd, const std::string& payload, std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::string seen;
  for (;;) {
    if (seen.find(payload) != std::string::npos) return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) return false;
    seen.append(buf, static_cast<size_t>(n));
  }
}

absl::Status RawSend(int netns, const std::string& dst, const std::vector<uint8_t>& packet) {
  const bool v6 = IsV6(dst);
  auto guard = netfilter::NetnsGuard::Enter(netns);
  if (!guard.ok()) return guard.status();
  UniqueFd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
  if (!fd) return ErrnoStatus(errno, "raw socket");
  const SockAddr sa = Addr(dst, 0);
  if (::sendto(fd.get(), packet.data(), packet.size(), 0, sa.get(), sa.len) !=
      static_cast<ssize_t>(packet.size())) {
    return ErrnoStatus(errno, "raw send to " + dst);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> NftInNetns(int netns, const std::string& args) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  UniqueFd rd(pipefd[0]);
  UniqueFd wr(pipefd[1]);
  const pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  if (pid == 0) {
    if (::setns(netns, CLONE_NEWNET) != 0 || ::dup2(wr.get(), STDOUT_FILENO) < 0) ::_exit(126);
    const std::string cmd = "exec nft " + args;
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  wr.reset();
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(rd.get(), buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError("nft " + args + " failed with status " + std::to_string(status));
  }
  return out;
}

}  // namespace forkd::testing
