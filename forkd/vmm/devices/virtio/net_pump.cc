#include "forkd/vmm/devices/virtio/net_pump.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/errno_status.h"
#include "forkd/vmm/seccomp/thread_filters.h"

namespace forkd::vmm::virtio {

absl::StatusOr<std::unique_ptr<NetPump>> NetPump::Start(Net* device, std::function<void()> kick_rx,
                                                        FatalFn on_fatal) {
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return ErrnoStatus(errno, "eventfd for the virtio-net pump");
  std::unique_ptr<NetPump> p(
      new NetPump(device, std::move(kick_rx), std::move(on_fatal), std::move(wake)));
  NetPump* self = p.get();
  device->set_rx_wakeup([self] { self->Wake(); });
  p->thread_ = std::thread(&NetPump::Run, self);
  return p;
}

NetPump::~NetPump() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  device_->set_rx_wakeup(nullptr);
}

void NetPump::Wake() {
  // EAGAIN means a wakeup is already pending: nothing lost.
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void NetPump::Pause() {
  std::lock_guard lock(mu_);  // waits out a kick in progress
  paused_ = true;
}

void NetPump::Resume() {
  {
    std::lock_guard lock(mu_);
    paused_ = false;
  }
  Wake();
}

void NetPump::Run() {
  seccomp::EnterThread(seccomp::ThreadKind::kDevice);
  absl::Status st = Loop();
  if (st.ok()) return;  // stopped
  st = Annotate(st, "virtio-net rx pump");
  if (on_fatal_) {
    on_fatal_(st);
  } else {
    (void)std::fprintf(stderr, "forkd-vmm: %s\n", st.ToString().c_str());
  }
}

absl::Status NetPump::Loop() {
  while (true) {
    bool watch_tap;
    {
      std::lock_guard lock(mu_);
      if (stop_) return absl::OkStatus();
      watch_tap = !paused_ && device_->wants_rx();
    }
    pollfd fds[2] = {{wake_.get(), POLLIN, 0}, {device_->tap_fd(), POLLIN, 0}};
    const int n = ::poll(fds, watch_tap ? 2 : 1, -1);
    if (n < 0 && errno == EINTR) continue;
    // Frames would never be received again: the VM must not run on as if
    // the device worked.
    if (n < 0) return ErrnoStatus(errno, "poll");
    if ((fds[0].revents | (watch_tap ? fds[1].revents : 0)) & POLLNVAL) {
      return absl::InternalError("poll: the tap or wakeup fd is not open (POLLNVAL)");
    }
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof v);
    }
    if (!watch_tap || !(fds[1].revents & (POLLIN | POLLERR | POLLHUP))) continue;
    std::lock_guard lock(mu_);
    if (stop_ || paused_) continue;
    const uint64_t runs = device_->rx_runs();
    kick_rx_();
    // The transport did not run the queue (driver not ready, or the device
    // needs a reset): stop watching until the driver sets rx up again, or
    // this loop would spin on a readable tap.
    if (device_->rx_runs() == runs) device_->set_wants_rx(false);
  }
}

}  // namespace forkd::vmm::virtio
