// QueueNotifier: the thread that processes virtqueue notifications.
//
// Every queue of every virtio transport gets an eventfd. The Machine
// registers it with KVM_IOEVENTFD (QueueNotify, datamatch = queue index), so
// a guest notify is a counter increment in the kernel and the vCPU does not
// exit; host-side events (vsock data for the guest) write the same eventfd.
// One thread epolls them all and calls MmioTransport::Kick(index).
//
// Pause parks the thread between kicks: once Pause() returns no queue is
// being processed, and notifications that arrive meanwhile stay in their
// eventfd counters until Resume(). Counters are not in a snapshot, so a
// restore marks every queue pending once (MarkAllPending) instead.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/vmm/devices/virtio/mmio_transport.h"

namespace forkd::vmm::virtio {

class QueueNotifier {
 public:
  static absl::StatusOr<std::unique_ptr<QueueNotifier>> Create();
  // Stops and joins the thread.
  ~QueueNotifier();
  QueueNotifier(const QueueNotifier&) = delete;
  QueueNotifier& operator=(const QueueNotifier&) = delete;

  // Creates one eventfd per queue of `transport` (before Start). Returns
  // them indexed by queue; they are borrowed and live as long as this.
  absl::StatusOr<std::vector<int>> Add(const std::shared_ptr<MmioTransport>& transport);

  // One timerfd per queue of `transport` (before Start): when one expires
  // the queue is kicked, like a notify. A rate-limited device arms them
  // (ArmTimer) to be run again once its tokens are back. Borrowed, indexed
  // by queue, live as long as this.
  absl::StatusOr<std::vector<int>> AddTimers(const std::shared_ptr<MmioTransport>& transport);
  // Arms timer `fd` (one from AddTimers) to fire once after `delay`
  // (re-arming replaces the previous expiry); any thread, never blocks.
  static absl::Status ArmTimer(int fd, std::chrono::nanoseconds delay);

  // Marks queue `fd` (one returned by Add) pending; any thread, never blocks.
  static void Signal(int fd);
  // Marks every queue pending once (a restore: counters are not saved).
  void MarkAllPending();

  absl::Status Start();
  // Returns once no kick is in flight; none starts until Resume().
  void Pause();
  void Resume();
  // Idempotent; pending notifications are dropped.
  void Stop();

  // Queues processed from an eventfd (guest notify or host event).
  uint64_t kicks() const { return kicks_.load(std::memory_order_relaxed); }

 private:
  QueueNotifier(UniqueFd epoll, UniqueFd stop) : epoll_(std::move(epoll)), stop_(std::move(stop)) {}
  void Run();

  struct Source {
    UniqueFd fd;
    std::shared_ptr<MmioTransport> transport;
    uint32_t index;
    bool timer = false;  // a timerfd from AddTimers
  };
  UniqueFd epoll_;
  UniqueFd stop_;  // eventfd that wakes the thread to exit
  std::vector<Source> sources_;
  std::thread thread_;
  std::mutex mu_;  // held while kicking; guards the flags
  std::condition_variable cv_;
  bool paused_ = false;
  bool stopping_ = false;
  std::atomic<uint64_t> kicks_{0};
};

}  // namespace forkd::vmm::virtio
