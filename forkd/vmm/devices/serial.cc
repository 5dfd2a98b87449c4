#include "forkd/vmm/devices/serial.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "forkd/vmm/vstate/kick.h"

namespace forkd::vmm {
namespace {

// Register offsets.
constexpr uint64_t kData = 0, kIer = 1, kIirFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6,
                   kScr = 7;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kIerRxAvailable = 0x01;
constexpr uint8_t kIerThrEmpty = 0x02;
constexpr uint8_t kIirNone = 0x01;
constexpr uint8_t kIirThrEmpty = 0x02;
constexpr uint8_t kIirRxAvailable = 0x04;
constexpr uint8_t kIirFifoEnabled = 0xc0;
constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrIdle = 0x60;  // THR empty | transmitter empty
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMsrIdle = 0xb0;  // DCD | DSR | CTS

// Bumped whenever the serialised layout changes.
constexpr uint8_t kStateVersion = 1;

}  // namespace

Serial::Serial(int out_fd, std::function<void()> irq) : out_fd_(out_fd), irq_(std::move(irq)) {
  s_.iir = kIirNone;
  s_.lsr = kLsrIdle;
  s_.msr = kMsrIdle;
  s_.mcr = 0x08;  // OUT2, as firmware leaves it
}

void Serial::Read(uint64_t offset, std::span<uint8_t> data) {
  if (data.empty()) return;
  data[0] = ReadReg(offset);
  for (size_t i = 1; i < data.size(); ++i) data[i] = 0;
}

void Serial::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (!data.empty()) WriteReg(offset, data[0]);
}

uint8_t Serial::ReadReg(uint64_t offset) {
  bool raise = false;
  uint8_t v = 0;
  {
    std::lock_guard lock(mu_);
    switch (offset) {
      case kData:
        if (s_.lcr & kLcrDlab) {
          v = s_.dll;
        } else if (!s_.rx.empty()) {
          v = s_.rx.front();
          s_.rx.pop_front();
        }
        break;
      case kIer:
        v = (s_.lcr & kLcrDlab) ? s_.dlh : s_.ier;
        break;
      case kIirFcr:
        v = s_.iir | kIirFifoEnabled;
        // Reading IIR acknowledges a THR-empty interrupt.
        if ((s_.iir & 0x0f) == kIirThrEmpty) s_.thr_interrupt_pending = false;
        break;
      case kLcr:
        v = s_.lcr;
        break;
      case kMcr:
        v = s_.mcr;
        break;
      case kLsr:
        v = kLsrIdle | (s_.rx.empty() ? 0 : kLsrDataReady);
        break;
      case kMsr:
        if (s_.mcr & kMcrLoop) {
          // Loopback: modem outputs appear on the status inputs (Linux's
          // 8250 autoconfig checks this).
          v = static_cast<uint8_t>(((s_.mcr & 0x01) << 5) | ((s_.mcr & 0x02) << 3) |
                                   ((s_.mcr & 0x04) << 4) | ((s_.mcr & 0x08) << 4));
        } else {
          v = s_.msr;
        }
        break;
      case kScr:
        v = s_.scr;
        break;
      default:
        break;
    }
    UpdateInterruptLocked(&raise);
  }
  if (raise && irq_) irq_();
  return v;
}

void Serial::WriteReg(uint64_t offset, uint8_t v) {
  bool raise = false;
  bool emit = false;
  {
    std::lock_guard lock(mu_);
    switch (offset) {
      case kData:
        if (s_.lcr & kLcrDlab) {
          s_.dll = v;
        } else {
          if (s_.mcr & kMcrLoop) {
            if (s_.rx.size() < kRxCapacity) s_.rx.push_back(v);
          } else {
            emit = true;
          }
          s_.thr_interrupt_pending = true;
        }
        break;
      case kIer:
        if (s_.lcr & kLcrDlab) {
          s_.dlh = v;
        } else {
          // Enabling the THR interrupt while THR is empty raises it at once.
          if ((v & kIerThrEmpty) && !(s_.ier & kIerThrEmpty)) s_.thr_interrupt_pending = true;
          s_.ier = v & 0x0f;
        }
        break;
      case kIirFcr:
        if (v & 0x02) s_.rx.clear();  // FCR: clear receive FIFO
        break;
      case kLcr:
        s_.lcr = v;
        break;
      case kMcr:
        s_.mcr = v & 0x1f;
        break;
      case kScr:
        s_.scr = v;
        break;
      default:
        break;  // LSR/MSR writes are ignored
    }
    UpdateInterruptLocked(&raise);
  }
  if (emit) Emit(v);
  if (raise && irq_) irq_();
}

void Serial::UpdateInterruptLocked(bool* raise) {
  uint8_t iir = kIirNone;
  if ((s_.ier & kIerRxAvailable) && !s_.rx.empty()) {
    iir = kIirRxAvailable;
  } else if ((s_.ier & kIerThrEmpty) && s_.thr_interrupt_pending) {
    iir = kIirThrEmpty;
  }
  *raise = iir != kIirNone && iir != s_.iir;
  s_.iir = iir;
}

void Serial::Emit(uint8_t byte) {
  if (out_fd_ < 0) return;
  // One attempt. A write blocked on a full pipe is interrupted by the vCPU
  // kick signal (pause/stop); the byte is then dropped rather than retried,
  // so a reader that stopped reading can never wedge pause or stop. A kick
  // that landed while this vCPU was outside KVM_RUN (handling this exit) was
  // consumed by the handler and would not interrupt the write: it is recorded
  // per thread (vstate/kick.h), so the byte is dropped instead. What remains
  // is the few instructions between this check and the write's entry into
  // the kernel. (Polling for POLLOUT first is no answer: a one-page pipe
  // reports no room after its first byte although writes still merge into
  // that page.) Other errors (closed reader) also drop the byte: console
  // output is best effort.
  if (KickedSinceRun()) return;
  (void)::write(out_fd_, &byte, 1);
}

size_t Serial::EnqueueInput(std::span<const uint8_t> bytes) {
  bool raise = false;
  size_t n = 0;
  {
    std::lock_guard lock(mu_);
    while (n < bytes.size() && s_.rx.size() < kRxCapacity) s_.rx.push_back(bytes[n++]);
    UpdateInterruptLocked(&raise);
  }
  if (raise && irq_) irq_();
  return n;
}

SerialState Serial::save() const {
  std::lock_guard lock(mu_);
  return s_;
}

void Serial::restore(const SerialState& s) {
  std::lock_guard lock(mu_);
  s_ = s;
}

DeviceState Serial::SaveDevice() const {
  SerialState s = save();
  DeviceState d;
  d.name = kName;
  d.bytes = {kStateVersion,
             s.ier,
             s.iir,
             s.lcr,
             s.mcr,
             s.lsr,
             s.msr,
             s.scr,
             s.dll,
             s.dlh,
             static_cast<uint8_t>(s.thr_interrupt_pending),
             static_cast<uint8_t>(s.rx.size())};
  d.bytes.insert(d.bytes.end(), s.rx.begin(), s.rx.end());
  return d;
}

absl::Status Serial::RestoreDevice(const DeviceState& d) {
  constexpr size_t kFixed = 12;
  if (d.name != kName || d.bytes.size() < kFixed || d.bytes[0] != kStateVersion ||
      d.bytes.size() != kFixed + d.bytes[11] || d.bytes[11] > kRxCapacity) {
    return absl::DataLossError(
        absl::StrCat("serial state: bad name, version or length (", d.bytes.size(), " bytes)"));
  }
  SerialState s;
  const auto& b = d.bytes;
  s.ier = b[1], s.iir = b[2], s.lcr = b[3], s.mcr = b[4], s.lsr = b[5], s.msr = b[6];
  s.scr = b[7], s.dll = b[8], s.dlh = b[9];
  s.thr_interrupt_pending = b[10] != 0;
  s.rx.assign(b.begin() + kFixed, b.end());
  restore(s);
  return absl::OkStatus();
}

}  // namespace forkd::vmm
