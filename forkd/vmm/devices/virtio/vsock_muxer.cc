#include "forkd/vmm/devices/virtio/vsock_muxer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/vmm/seccomp/thread_filters.h"

namespace forkd::vmm::virtio {
namespace {

constexpr size_t kMaxHandshake = 64;
constexpr size_t kReadChunk = 64 * 1024;

// Non-blocking send: bytes taken, 0 when the socket is full, -1 on error.
ssize_t SendSome(int fd, std::span<const uint8_t> b) {
  while (true) {
    ssize_t n = ::send(fd, b.data(), b.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<VsockMuxer>> VsockMuxer::Listen(const std::string& uds_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (uds_path.empty() || uds_path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(absl::StrCat("vsock socket path '", uds_path, "' length"));
  }
  std::memcpy(addr.sun_path, uds_path.data(), uds_path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return ErrnoStatus(errno, "vsock socket");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return ErrnoStatus(errno, "bind vsock socket " + uds_path);
  }
  if (::listen(fd.get(), 16) != 0) return ErrnoStatus(errno, "listen " + uds_path);
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return ErrnoStatus(errno, "eventfd");
  uint32_t seed = 0;
  if (::getrandom(&seed, sizeof seed, 0) != static_cast<ssize_t>(sizeof seed)) {
    return ErrnoStatus(errno, "getrandom for the first vsock host port");
  }
  auto muxer =
      std::unique_ptr<VsockMuxer>(new VsockMuxer(uds_path, std::move(fd), std::move(wake)));
  muxer->next_port_ = kFirstLocalPort + seed % (0u - kFirstLocalPort);
  return muxer;
}

VsockMuxer::~VsockMuxer() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  ::unlink(path_.c_str());
}

void VsockMuxer::Wake() {
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void VsockMuxer::Start(Vsock* device, std::function<void()> kick_rx, FatalFn on_fatal) {
  device_ = device;
  kick_rx_ = std::move(kick_rx);
  on_fatal_ = std::move(on_fatal);
  thread_ = std::thread(&VsockMuxer::Run, this);
}

void VsockMuxer::OnConnected(VsockConnKey key) {
  {
    std::lock_guard lock(mu_);
    events_.push_back({EventKind::kConnected, key});
  }
  Wake();
}

void VsockMuxer::OnGuestConnect(VsockConnKey key) {
  {
    std::lock_guard lock(mu_);
    events_.push_back({EventKind::kGuestConnect, key});
  }
  Wake();
}

void VsockMuxer::OnActivity() { Wake(); }

void VsockMuxer::OnClosed(VsockConnKey key) {
  {
    std::lock_guard lock(mu_);
    events_.push_back({EventKind::kClosed, key});
  }
  Wake();
}

void VsockMuxer::HandleEvents() {
  std::deque<Event> events;
  {
    std::lock_guard lock(mu_);
    events.swap(events_);
  }
  for (const Event& e : events) {
    switch (e.kind) {
      case EventKind::kConnected: {
        auto it = conns_.find(e.key);
        if (it != conns_.end()) it->second.ok_pending = true;
        break;
      }
      case EventKind::kGuestConnect:
        GuestConnect(e.key);
        break;
      case EventKind::kClosed:
        conns_.erase(e.key);  // closes the host socket
        break;
    }
  }
}

void VsockMuxer::GuestConnect(VsockConnKey key) {
  const std::string path = absl::StrCat(path_, "_", key.local_port);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  bool ok = false;
  UniqueFd fd;
  if (path.size() < sizeof addr.sun_path) {
    std::memcpy(addr.sun_path, path.data(), path.size());
    fd = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    // A unix stream connect never goes in progress: it is queued on the
    // listener's backlog at once or fails (no listener, backlog full).
    ok = fd && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  if (ok) conns_[key] = Conn{.fd = std::move(fd), .ready = true};
  // Refused by the device too when it cannot queue the RESPONSE.
  if (!device_->AcceptGuestConnect(key, ok)) conns_.erase(key);
  kick_rx_();
}

void VsockMuxer::AcceptOne() {
  UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!c) return;
  const int raw = c.get();
  pending_[raw] = Pending{std::move(c), std::string()};
}

uint32_t VsockMuxer::NextLocalPort() {
  while (true) {
    const uint32_t port = next_port_++;
    if (next_port_ == 0) next_port_ = kFirstLocalPort;
    auto it = conns_.lower_bound({port, 0});
    if (it == conns_.end() || it->first.local_port != port) return port;
  }
}

bool VsockMuxer::ReadHandshake(Pending& p) {
  char ch;
  while (true) {
    ssize_t n = ::read(p.fd.get(), &ch, 1);  // byte at a time: never read past the line
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return false;
    if (n <= 0) return true;  // EOF or error: refused
    if (ch == '\n') break;
    p.line.push_back(ch);
    if (p.line.size() > kMaxHandshake) return true;
  }
  constexpr std::string_view kConnect = "CONNECT ";
  uint32_t guest_port = 0;
  if (p.line.rfind(kConnect, 0) != 0) return true;
  const char* end = p.line.data() + p.line.size();
  auto [at, ec] = std::from_chars(p.line.data() + kConnect.size(), end, guest_port);
  if (ec != std::errc() || at != end) return true;
  // The muxer's connections are the device's, apart from guest requests
  // still on their way here: a pair the device holds is skipped.
  VsockConnKey key{NextLocalPort(), guest_port};
  while (!device_->Connect(key)) key.local_port = NextLocalPort();
  conns_[key] = Conn{.fd = std::move(p.fd)};
  kick_rx_();
  return true;
}

bool VsockMuxer::ForwardToGuest(VsockConnKey key, Conn& c) {
  const uint32_t credit = device_->SendCredit(key);
  if (credit == 0) return true;
  std::vector<uint8_t> buf(std::min<size_t>(credit, kReadChunk));
  ssize_t n = ::read(c.fd.get(), buf.data(), buf.size());
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n < 0) {  // the host side failed: reset
    device_->Close(key);
    kick_rx_();
    return false;
  }
  if (n == 0) {  // host EOF: the guest hears SHUTDOWN(SEND)
    c.host_eof = true;
    const bool finished = device_->HostEof(key);
    kick_rx_();
    return !finished;
  }
  buf.resize(static_cast<size_t>(n));
  device_->Send(key, buf);
  kick_rx_();
  return true;
}

bool VsockMuxer::ForwardToHost(VsockConnKey key, Conn& c) {
  const int fd = c.fd.get();
  const Vsock::DrainResult r =
      device_->DrainToHost(key, [fd](std::span<const uint8_t> b) { return SendSome(fd, b); });
  if (r.shut_write) ::shutdown(fd, SHUT_WR);
  kick_rx_();  // a credit update or RST may be queued
  return !r.closed;
}

int VsockMuxer::ExpireCloses() {
  const std::vector<VsockConnKey> expired = device_->ExpireCloses();
  for (const VsockConnKey& key : expired) conns_.erase(key);  // closes the host sockets
  if (!expired.empty()) kick_rx_();                           // the RSTs
  const auto next = device_->TimeToNextClose();
  if (!next) return -1;
  // Rounded up, so the wake-up is never early (a spin until the deadline).
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next).count();
  return static_cast<int>(std::min<int64_t>(ms, 60'000));
}

void VsockMuxer::Run() {
  seccomp::EnterThread(seccomp::ThreadKind::kDevice);
  absl::Status st = Loop();
  if (st.ok()) return;  // stopped
  st = Annotate(st, "vsock muxer");
  if (on_fatal_) {
    on_fatal_(st);
  } else {
    (void)std::fprintf(stderr, "forkd-vmm: %s\n", st.ToString().c_str());
  }
}

absl::Status VsockMuxer::Loop() {
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stop_) return absl::OkStatus();
    }
    HandleEvents();
    const int timeout_ms = ExpireCloses();
    std::vector<pollfd> fds = {{wake_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
    std::vector<int> pending;
    for (auto& [fd, p] : pending_) {
      fds.push_back({fd, POLLIN, 0});
      pending.push_back(fd);
    }
    std::vector<VsockConnKey> keys;
    for (auto& [key, c] : conns_) {
      short events = 0;
      if (c.ok_pending) events |= POLLOUT;
      if (c.ready) {
        if (!c.host_eof && device_->SendCredit(key) > 0) events |= POLLIN;
        if (device_->HasToHost(key)) events |= POLLOUT;
      }
      // Nothing to do but wait for the guest (its answer to the REQUEST, or
      // credit): still watched for the host closing its socket (POLLHUP
      // needs no events), once.
      if (events == 0 && c.host_gone) continue;
      fds.push_back({c.fd.get(), events, 0});
      keys.push_back(key);
    }
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    // Every host connection would be dead: the VM must not run on as if
    // vsock worked.
    if (n < 0 && errno != EINTR) {
      return ErrnoStatus(errno, absl::StrCat("poll of ", fds.size(), " fds"));
    }
    if (n <= 0) continue;
    if (fds[0].revents) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof v);
    }
    if (fds[1].revents & POLLIN) AcceptOne();
    for (size_t i = 0; i < pending.size(); ++i) {
      if (!fds[2 + i].revents) continue;
      auto it = pending_.find(pending[i]);
      if (it != pending_.end() && ReadHandshake(it->second)) pending_.erase(it);
    }
    for (size_t i = 0; i < keys.size(); ++i) {
      const pollfd& p = fds[2 + pending.size() + i];
      if (!p.revents) continue;
      auto it = conns_.find(keys[i]);
      if (it == conns_.end()) continue;
      Conn& c = it->second;
      bool alive = true;
      const bool broken = (p.revents & (POLLERR | POLLHUP)) != 0;
      if (!c.ready && !c.ok_pending) {
        // The guest has not answered the REQUEST and the host closed its
        // socket: nothing will ever use the connection, RST the guest.
        if (broken) {
          device_->Close(keys[i]);
          kick_rx_();
          alive = false;
        }
      } else if (c.ok_pending) {
        const std::string ok = absl::StrCat("OK ", keys[i].local_port, "\n");
        const ssize_t w =
            SendSome(c.fd.get(), {reinterpret_cast<const uint8_t*>(ok.data()), ok.size()});
        if (w == static_cast<ssize_t>(ok.size())) {
          c.ok_pending = false;
          c.ready = true;  // the next round polls for bytes
        } else if (w != 0 || broken) {
          device_->Close(keys[i]);
          kick_rx_();
          alive = false;
        }
      } else {
        if ((p.events & POLLOUT) && ((p.revents & POLLOUT) || broken)) {
          alive = ForwardToHost(keys[i], c);
        }
        if (alive && (p.events & POLLIN) && ((p.revents & POLLIN) || broken)) {
          alive = ForwardToGuest(keys[i], c);
        } else if (alive && !(p.events & POLLIN) && (p.revents & (POLLHUP | POLLERR)) &&
                   !c.host_gone) {
          // Closed both ways while the guest has no credit or after EOF.
          c.host_gone = true;
          alive = !device_->HostGone(keys[i]);
          kick_rx_();
        }
      }
      if (!alive) conns_.erase(it);
    }
  }
}

}  // namespace forkd::vmm::virtio
