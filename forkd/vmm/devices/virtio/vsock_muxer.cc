#include "forkd/vmm/devices/virtio/vsock_muxer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace forkd::vmm::virtio {
namespace {

constexpr size_t kMaxHandshake = 64;
constexpr size_t kReadChunk = 4096;
// While a connection waits for guest credit nothing in poll() says when it
// returns (credit arrives on the vCPU thread), so the loop re-checks.
constexpr int kCreditRecheckMs = 5;

bool WriteAll(int fd, std::span<const uint8_t> b) {
  size_t done = 0;
  while (done < b.size()) {
    ssize_t n = ::send(fd, b.data() + done, b.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
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
  return std::unique_ptr<VsockMuxer>(new VsockMuxer(uds_path, std::move(fd), std::move(wake)));
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

void VsockMuxer::Start(Vsock* device, std::function<void()> kick_rx) {
  device_ = device;
  kick_rx_ = std::move(kick_rx);
  thread_ = std::thread(&VsockMuxer::Run, this);
}

void VsockMuxer::OnConnected(uint32_t local_port) {
  std::shared_ptr<UniqueFd> fd;
  {
    std::lock_guard lock(mu_);
    auto it = conns_.find(local_port);
    if (it == conns_.end()) return;
    fd = it->second;
  }
  std::string ok = absl::StrCat("OK ", local_port, "\n");
  if (!WriteAll(fd->get(), {reinterpret_cast<const uint8_t*>(ok.data()), ok.size()})) {
    device_->Close(local_port);
    OnClosed(local_port);
  }
  Wake();  // the connection now has credit to poll for
}

bool VsockMuxer::OnData(uint32_t local_port, std::span<const uint8_t> bytes) {
  std::shared_ptr<UniqueFd> fd;
  {
    std::lock_guard lock(mu_);
    auto it = conns_.find(local_port);
    if (it == conns_.end()) return false;
    fd = it->second;
  }
  return WriteAll(fd->get(), bytes);
}

void VsockMuxer::OnClosed(uint32_t local_port) {
  std::lock_guard lock(mu_);
  conns_.erase(local_port);  // the fd closes when the poll thread lets go too
}

void VsockMuxer::AcceptOne() {
  UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!c) return;
  const int raw = c.get();
  std::lock_guard lock(mu_);
  pending_[raw] = {std::make_shared<UniqueFd>(std::move(c)), std::string()};
}

bool VsockMuxer::ReadHandshake(int fd, std::string* line) {
  char ch;
  while (true) {
    ssize_t n = ::read(fd, &ch, 1);  // byte at a time: never read past the line
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return false;
    if (n <= 0) return true;  // EOF or error: refused
    if (ch == '\n') break;
    line->push_back(ch);
    if (line->size() > kMaxHandshake) return true;
  }
  constexpr std::string_view kConnect = "CONNECT ";
  uint32_t guest_port = 0;
  if (line->rfind(kConnect, 0) != 0) return true;
  auto [p, ec] =
      std::from_chars(line->data() + kConnect.size(), line->data() + line->size(), guest_port);
  if (ec != std::errc() || p != line->data() + line->size()) return true;
  uint32_t local_port;
  {
    std::lock_guard lock(mu_);
    local_port = next_port_++;
    conns_[local_port] = pending_[fd].first;
  }
  device_->Connect(local_port, guest_port);
  kick_rx_();
  return true;
}

bool VsockMuxer::ForwardToGuest(uint32_t port, int fd) {
  const uint32_t credit = device_->SendCredit(port);
  if (credit == 0) return true;
  std::vector<uint8_t> buf(std::min<size_t>(credit, kReadChunk));
  ssize_t n = ::read(fd, buf.data(), buf.size());
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) return false;  // host closed
  buf.resize(static_cast<size_t>(n));
  device_->Send(port, buf);
  kick_rx_();
  return true;
}

void VsockMuxer::Run() {
  while (true) {
    std::vector<pollfd> fds = {{wake_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
    std::vector<std::pair<uint32_t, std::shared_ptr<UniqueFd>>> conns;
    std::vector<std::shared_ptr<UniqueFd>> pending;
    bool waiting_for_credit = false;
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
      for (auto& [fd, p] : pending_) pending.push_back(p.first);
      for (auto& [port, fd] : conns_) conns.emplace_back(port, fd);
    }
    for (auto& p : pending) fds.push_back({p->get(), POLLIN, 0});
    std::vector<std::pair<uint32_t, std::shared_ptr<UniqueFd>>> polled;
    for (auto& [port, fd] : conns) {
      if (device_->SendCredit(port) == 0) {
        waiting_for_credit = true;  // connecting, or the guest is full
        continue;
      }
      fds.push_back({fd->get(), POLLIN, 0});
      polled.emplace_back(port, fd);
    }
    int n = ::poll(fds.data(), fds.size(), waiting_for_credit ? kCreditRecheckMs : -1);
    if (n < 0 && errno != EINTR) return;
    if (fds[0].revents) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof v);
    }
    if (fds[1].revents & POLLIN) AcceptOne();
    for (size_t i = 0; i < pending.size(); ++i) {
      if (!fds[2 + i].revents) continue;
      const int fd = pending[i]->get();
      std::string* line;
      {
        std::lock_guard lock(mu_);
        line = &pending_[fd].second;
      }
      if (ReadHandshake(fd, line)) {
        std::lock_guard lock(mu_);
        pending_.erase(fd);
      }
    }
    for (size_t i = 0; i < polled.size(); ++i) {
      if (!fds[2 + pending.size() + i].revents) continue;
      if (!ForwardToGuest(polled[i].first, polled[i].second->get())) {
        device_->Close(polled[i].first);
        kick_rx_();
        OnClosed(polled[i].first);
      }
    }
  }
}

}  // namespace forkd::vmm::virtio
