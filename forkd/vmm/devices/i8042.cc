#include "forkd/vmm/devices/i8042.h"

namespace forkd::vmm {
namespace {

constexpr uint64_t kDataOffset = 0;
constexpr uint64_t kCommandOffset = 4;
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystemFlag = 0x04;
constexpr uint8_t kCmdReadControl = 0x20;
constexpr uint8_t kCmdWriteControl = 0x60;
constexpr uint8_t kCmdSelfTest = 0xaa;
constexpr uint8_t kSelfTestOk = 0x55;
constexpr uint8_t kStateVersion = 1;

}  // namespace

void I8042::Read(uint64_t offset, std::span<uint8_t> data) {
  if (data.empty()) return;
  std::lock_guard lock(mu_);
  if (offset == kDataOffset) {
    data[0] = s_.data;
    s_.status &= ~kStatusOutputFull;
  } else if (offset == kCommandOffset) {
    data[0] = s_.status | kStatusSystemFlag;
  } else {
    data[0] = 0xff;
  }
}

void I8042::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return;
  const uint8_t v = data[0];
  bool reset = false;
  {
    std::lock_guard lock(mu_);
    if (offset == kCommandOffset) {
      switch (v) {
        case kCmdReadControl:
          s_.data = s_.control;
          s_.status |= kStatusOutputFull;
          break;
        case kCmdWriteControl:
          s_.pending_command = v;
          break;
        case kCmdSelfTest:
          s_.data = kSelfTestOk;
          s_.status |= kStatusOutputFull;
          break;
        case kCmdReset:
          reset = true;
          break;
        default:
          break;
      }
    } else if (offset == kDataOffset && s_.pending_command == kCmdWriteControl) {
      s_.control = v;
      s_.pending_command = 0;
    }
  }
  if (reset && on_reset_) on_reset_();
}

I8042State I8042::save() const {
  std::lock_guard lock(mu_);
  return s_;
}

void I8042::restore(const I8042State& s) {
  std::lock_guard lock(mu_);
  s_ = s;
}

DeviceState I8042::SaveDevice() const {
  I8042State s = save();
  return {kName, {kStateVersion, s.status, s.data, s.control, s.pending_command}};
}

absl::Status I8042::RestoreDevice(const DeviceState& d) {
  if (d.name != kName || d.bytes.size() != 5 || d.bytes[0] != kStateVersion) {
    return absl::DataLossError("i8042 state: bad name, version or length");
  }
  restore({d.bytes[1], d.bytes[2], d.bytes[3], d.bytes[4]});
  return absl::OkStatus();
}

}  // namespace forkd::vmm
