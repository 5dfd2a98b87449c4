// The host side of virtio-net's receive path: one thread that watches the
// tap while the device wants frames (Net::wants_rx) and then processes the
// rx queue through the transport (so the transport's lock is taken and the
// guest is interrupted). While the guest has no rx buffers, or the machine
// is paused for a snapshot, the tap is not watched and frames wait in (or
// are dropped by) the tap's own queue.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/vmm/devices/virtio/net.h"

namespace forkd::vmm::virtio {

class NetPump {
 public:
  // `kick_rx` processes the device's rx queue through its transport.
  // `on_fatal` hears why the thread ended on its own (poll failed, the tap
  // fd went invalid): the device is dead and the Machine stops the VM.
  // Installs the device's rx wakeup; `device` must outlive the pump.
  using FatalFn = std::function<void(const absl::Status&)>;
  static absl::StatusOr<std::unique_ptr<NetPump>> Start(Net* device, std::function<void()> kick_rx,
                                                        FatalFn on_fatal = {});
  ~NetPump();
  NetPump(const NetPump&) = delete;
  NetPump& operator=(const NetPump&) = delete;

  // After Pause returns no rx processing is in flight and none starts until
  // Resume: guest memory and the queues hold still for a snapshot.
  void Pause();
  void Resume();

 private:
  NetPump(Net* device, std::function<void()> kick_rx, FatalFn on_fatal, UniqueFd wake)
      : device_(device),
        kick_rx_(std::move(kick_rx)),
        on_fatal_(std::move(on_fatal)),
        wake_(std::move(wake)) {}
  void Run();
  // The loop; an error ends the thread (reported by Run).
  absl::Status Loop();
  void Wake();

  Net* const device_;
  const std::function<void()> kick_rx_;
  const FatalFn on_fatal_;
  UniqueFd wake_;
  std::thread thread_;
  std::mutex mu_;  // held across a kick; guards the flags
  bool paused_ = false;
  bool stop_ = false;
};

}  // namespace forkd::vmm::virtio
