#include "forkd/vmm/devices/virtio/notifier.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/vmm/seccomp/thread_filters.h"

namespace forkd::vmm::virtio {
namespace {

constexpr uint64_t kStopTag = std::numeric_limits<uint64_t>::max();

}  // namespace

absl::StatusOr<std::unique_ptr<QueueNotifier>> QueueNotifier::Create() {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep) return ErrnoStatus(errno, "epoll_create1 for the queue notifier");
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop) return ErrnoStatus(errno, "eventfd for the queue notifier");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kStopTag;
  if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, stop.get(), &ev) != 0) {
    return ErrnoStatus(errno, "epoll_ctl stop eventfd");
  }
  return std::unique_ptr<QueueNotifier>(new QueueNotifier(std::move(ep), std::move(stop)));
}

QueueNotifier::~QueueNotifier() { Stop(); }

absl::StatusOr<std::vector<int>> QueueNotifier::Add(
    const std::shared_ptr<MmioTransport>& transport) {
  if (thread_.joinable()) return absl::FailedPreconditionError("queue notifier already started");
  std::vector<int> fds;
  for (uint32_t i = 0; i < transport->queue_count(); ++i) {
    UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd)
      return ErrnoStatus(errno, absl::StrCat("eventfd for ", transport->name(), " queue ", i));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = sources_.size();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, efd.get(), &ev) != 0) {
      return ErrnoStatus(errno, absl::StrCat("epoll_ctl ", transport->name(), " queue ", i));
    }
    fds.push_back(efd.get());
    sources_.push_back({std::move(efd), transport, i});
  }
  return fds;
}

absl::StatusOr<std::vector<int>> QueueNotifier::AddTimers(
    const std::shared_ptr<MmioTransport>& transport) {
  if (thread_.joinable()) return absl::FailedPreconditionError("queue notifier already started");
  std::vector<int> fds;
  for (uint32_t i = 0; i < transport->queue_count(); ++i) {
    UniqueFd tfd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!tfd) {
      return ErrnoStatus(errno, absl::StrCat("timerfd for ", transport->name(), " queue ", i));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = sources_.size();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, tfd.get(), &ev) != 0) {
      return ErrnoStatus(errno, absl::StrCat("epoll_ctl ", transport->name(), " timer ", i));
    }
    fds.push_back(tfd.get());
    sources_.push_back({std::move(tfd), transport, i, /*timer=*/true});
  }
  return fds;
}

absl::Status QueueNotifier::ArmTimer(int fd, std::chrono::nanoseconds delay) {
  // Zero would disarm: the earliest expiry is 1 ns.
  const int64_t ns = std::max<int64_t>(delay.count(), 1);
  itimerspec spec{};
  spec.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  spec.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  if (::timerfd_settime(fd, 0, &spec, nullptr) != 0) return ErrnoStatus(errno, "timerfd_settime");
  return absl::OkStatus();
}

void QueueNotifier::Signal(int fd) {
  // EAGAIN only when the counter is about to overflow: it is pending anyway.
  uint64_t one = 1;
  (void)!::write(fd, &one, sizeof one);
}

void QueueNotifier::MarkAllPending() {
  for (const auto& s : sources_) {
    if (!s.timer) Signal(s.fd.get());
  }
}

absl::Status QueueNotifier::Start() {
  if (thread_.joinable()) return absl::FailedPreconditionError("queue notifier already started");
  {
    std::lock_guard lock(mu_);
    if (stopping_) return absl::FailedPreconditionError("queue notifier stopped");
  }
  thread_ = std::thread(&QueueNotifier::Run, this);
  return absl::OkStatus();
}

void QueueNotifier::Pause() {
  // Taking the lock waits out a kick in flight; the thread re-checks the
  // flag under it before the next one.
  std::lock_guard lock(mu_);
  paused_ = true;
}

void QueueNotifier::Resume() {
  {
    std::lock_guard lock(mu_);
    paused_ = false;
  }
  cv_.notify_all();
}

void QueueNotifier::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  Signal(stop_.get());
  if (thread_.joinable()) thread_.join();
}

void QueueNotifier::Run() {
  seccomp::EnterThread(seccomp::ThreadKind::kDevice);
  epoll_event evs[16];
  while (true) {
    const int n = ::epoll_wait(epoll_.get(), evs, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Cannot happen with a valid epoll fd; notifications would stop, so
      // say why rather than spin.
      (void)std::fprintf(stderr, "forkd-vmm: queue notifier: epoll_wait: %s\n",
                         std::strerror(errno));
      return;
    }
    std::unique_lock lock(mu_);
    // Parked here while paused: the eventfds keep counting, and being level
    // triggered they are reported again after Resume().
    cv_.wait(lock, [this] { return !paused_ || stopping_; });
    if (stopping_) return;
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.u64 == kStopTag) continue;  // stopping_ is set before the write
      Source& s = sources_[evs[i].data.u64];
      uint64_t count;
      // An eventfd's count or a timerfd's expirations. EAGAIN: consumed by
      // an earlier round of this loop (stale event).
      if (::read(s.fd.get(), &count, sizeof count) != sizeof count) continue;
      kicks_.fetch_add(1, std::memory_order_relaxed);
      s.transport->Kick(s.index);
    }
  }
}

}  // namespace forkd::vmm::virtio
