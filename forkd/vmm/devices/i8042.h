// Just enough of the i8042 keyboard controller for Linux's probe to settle
// and for `reboot=k`: writing 0xfe (pulse reset line) to the command port
// ends the VM with a reset status through `on_reset`.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "absl/status/status.h"
#include "forkd/vmm/devices/bus.h"
#include "forkd/vmm/vstate/state.h"

namespace forkd::vmm {

struct I8042State {
  uint8_t status = 0;
  uint8_t data = 0;
  uint8_t control = 0;
  uint8_t pending_command = 0;  // a command waiting for its data byte
};

class I8042 : public BusDevice {
 public:
  static constexpr const char* kName = "i8042";
  static constexpr uint8_t kCmdReset = 0xfe;

  // Registered over ports 0x60..0x64; offsets 0 (data) and 4 (command).
  explicit I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  I8042State save() const;
  void restore(const I8042State& s);
  DeviceState SaveDevice() const;
  absl::Status RestoreDevice(const DeviceState& d);

 private:
  std::function<void()> on_reset_;
  mutable std::mutex mu_;
  I8042State s_;
};

}  // namespace forkd::vmm
