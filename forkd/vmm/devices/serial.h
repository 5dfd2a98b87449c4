// An 8250/16550A UART (COM1). Output bytes go to a log fd as the guest
// writes them; input bytes are queued by the host (EnqueueInput) and raise
// the receive interrupt when the guest enabled it. Enough of the register
// set for Linux's 8250 driver (including the loopback probe) and for the
// probe guest's polling.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>

#include "absl/status/statusor.h"
#include "forkd/vmm/devices/bus.h"
#include "forkd/vmm/vstate/state.h"

namespace forkd::vmm {

struct SerialState {
  uint8_t ier = 0, iir = 0, lcr = 0, mcr = 0, lsr = 0, msr = 0, scr = 0, dll = 0, dlh = 0;
  bool thr_interrupt_pending = false;
  std::deque<uint8_t> rx;
};

class Serial : public BusDevice {
 public:
  static constexpr const char* kName = "serial0";
  static constexpr size_t kRxCapacity = 64;

  // `out_fd` is borrowed (-1 discards output); `irq` pulses the UART's line.
  Serial(int out_fd, std::function<void()> irq);

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Queues host input; returns how many bytes fit in the receive FIFO.
  size_t EnqueueInput(std::span<const uint8_t> bytes);

  SerialState save() const;
  void restore(const SerialState& s);
  DeviceState SaveDevice() const;
  absl::Status RestoreDevice(const DeviceState& d);

 private:
  uint8_t ReadReg(uint64_t offset);
  void WriteReg(uint64_t offset, uint8_t v);
  void UpdateInterruptLocked(bool* raise);
  void Emit(uint8_t byte);

  int out_fd_;
  std::function<void()> irq_;
  mutable std::mutex mu_;
  SerialState s_;
};

}  // namespace forkd::vmm
