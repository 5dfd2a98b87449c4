// A minimal MC146818 CMOS/RTC at ports 0x70 (index) and 0x71 (data).
//
// Why it exists: an unclaimed port reads 0xff, and Linux reading 0xff from
// the RTC's status register A sees the update-in-progress bit stuck; it then
// polls for up to a second per RTC read at boot (8.4 s to /init against 4.4 s
// under a VMM that answers there; forkd/vmm/README.md).
//
// What it does: the time registers (0x00 seconds, 0x02 minutes, 0x04 hours,
// 0x06 weekday, 0x07 day, 0x08 month, 0x09 year, 0x32 century) answer the
// host's CLOCK_REALTIME in UTC, BCD, 24-hour mode, read at each access;
// status A has update-in-progress clear (and the standard 32.768 kHz divider),
// B says BCD + 24 h with every interrupt disabled, C reads 0 (no interrupt
// pending), D says the clock is valid (VRT). Writes to the time and status
// registers are ignored: the guest cannot set the host's clock, and forkd
// steps the guest clock itself (NotifyForked). The other bytes (alarm
// registers, 0x0e..0x7f) are plain writable CMOS RAM. No alarm, periodic or
// update interrupts are raised (IRQ 8 is never asserted). The NMI-disable
// bit (bit 7 of the index) is accepted and ignored.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>
#include <span>

#include "absl/status/status.h"
#include "forkd/vmm/devices/bus.h"
#include "forkd/vmm/vstate/state.h"

namespace forkd::vmm {

class Rtc : public BusDevice {
 public:
  static constexpr const char* kName = "cmos-rtc";
  static constexpr uint16_t kPortCount = 2;  // index at offset 0, data at offset 1
  // The CMOS byte ACPI's FADT names as the century register.
  static constexpr uint8_t kCenturyRegister = 0x32;

  // `now` returns seconds since the epoch (UTC); default CLOCK_REALTIME.
  explicit Rtc(std::function<time_t()> now = {});

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // The selected index and the CMOS RAM (the clock itself is the host's).
  DeviceState SaveDevice() const;
  absl::Status RestoreDevice(const DeviceState& d);

 private:
  uint8_t ReadRegister(uint8_t index) const;

  std::function<time_t()> now_;
  mutable std::mutex mu_;
  uint8_t index_ = 0;
  std::array<uint8_t, 128> ram_{};
};

}  // namespace forkd::vmm
