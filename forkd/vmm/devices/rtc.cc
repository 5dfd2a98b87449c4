#include "forkd/vmm/devices/rtc.h"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace forkd::vmm {
namespace {

constexpr uint8_t kStateVersion = 1;
constexpr uint8_t kIndexMask = 0x7f;  // bit 7 is the NMI-disable bit

constexpr uint8_t kSeconds = 0x00;
constexpr uint8_t kMinutes = 0x02;
constexpr uint8_t kHours = 0x04;
constexpr uint8_t kWeekday = 0x06;
constexpr uint8_t kDayOfMonth = 0x07;
constexpr uint8_t kMonth = 0x08;
constexpr uint8_t kYear = 0x09;
constexpr uint8_t kStatusA = 0x0a;
constexpr uint8_t kStatusB = 0x0b;
constexpr uint8_t kStatusC = 0x0c;
constexpr uint8_t kStatusD = 0x0d;

// Divider 010 (32.768 kHz time base), rate 0110 (1024 Hz), UIP (bit 7) clear.
constexpr uint8_t kStatusAValue = 0x26;
// 24-hour mode (bit 1); BCD (bit 2 clear); no interrupts enabled.
constexpr uint8_t kStatusBValue = 0x02;
// Valid RAM and time (VRT).
constexpr uint8_t kStatusDValue = 0x80;

uint8_t Bcd(int v) { return static_cast<uint8_t>(((v / 10) << 4) | (v % 10)); }

time_t RealtimeSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec;
}

bool IsClockRegister(uint8_t index) {
  switch (index) {
    case kSeconds:
    case kMinutes:
    case kHours:
    case kWeekday:
    case kDayOfMonth:
    case kMonth:
    case kYear:
    case kStatusA:
    case kStatusB:
    case kStatusC:
    case kStatusD:
    case Rtc::kCenturyRegister:
      return true;
    default:
      return false;
  }
}

}  // namespace

Rtc::Rtc(std::function<time_t()> now) : now_(now ? std::move(now) : RealtimeSeconds) {}

uint8_t Rtc::ReadRegister(uint8_t index) const {
  if (!IsClockRegister(index)) return ram_[index];
  switch (index) {
    case kStatusA:
      return kStatusAValue;
    case kStatusB:
      return kStatusBValue;
    case kStatusC:
      return 0;
    case kStatusD:
      return kStatusDValue;
    default:
      break;
  }
  // UTC calendar fields by pure arithmetic (<chrono>), never gmtime_r: glibc's
  // gmtime_r initialises its time-zone state on first use, which may open
  // /etc/localtime, and this runs on a vCPU thread whose seccomp filter
  // rightly has no openat (it killed forkd-vmm on a Linux guest's first RTC
  // read; docs/testing-tiers.md).
  using std::chrono::days;
  using std::chrono::seconds;
  using std::chrono::sys_days;
  const std::chrono::sys_seconds t{seconds{now_()}};
  const sys_days day = std::chrono::floor<days>(t);
  const std::chrono::year_month_day ymd{day};
  const std::chrono::hh_mm_ss hms{t - day};
  const int year = static_cast<int>(ymd.year());
  switch (index) {
    case kSeconds:
      return Bcd(static_cast<int>(hms.seconds().count()));
    case kMinutes:
      return Bcd(static_cast<int>(hms.minutes().count()));
    case kHours:
      return Bcd(static_cast<int>(hms.hours().count()));
    case kWeekday:
      return Bcd(static_cast<int>(std::chrono::weekday{day}.c_encoding()) + 1);  // 1 = Sunday
    case kDayOfMonth:
      return Bcd(static_cast<int>(static_cast<unsigned>(ymd.day())));
    case kMonth:
      return Bcd(static_cast<int>(static_cast<unsigned>(ymd.month())));
    case kYear:
      return Bcd(year % 100);
    case kCenturyRegister:
      return Bcd(year / 100);
    default:
      return 0;
  }
}

void Rtc::Read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (auto& b : data) b = offset == 1 ? ReadRegister(index_) : index_;
}

void Rtc::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return;
  std::lock_guard lock(mu_);
  const uint8_t v = data[0];
  if (offset == 0) {
    index_ = v & kIndexMask;
  } else if (!IsClockRegister(index_)) {
    ram_[index_] = v;
  }
}

DeviceState Rtc::SaveDevice() const {
  std::lock_guard lock(mu_);
  DeviceState d{kName, std::vector<uint8_t>(2 + ram_.size())};
  d.bytes[0] = kStateVersion;
  d.bytes[1] = index_;
  std::copy(ram_.begin(), ram_.end(), d.bytes.begin() + 2);
  return d;
}

absl::Status Rtc::RestoreDevice(const DeviceState& d) {
  if (d.name != kName || d.bytes.size() != 2 + ram_.size() || d.bytes[0] != kStateVersion ||
      (d.bytes[1] & ~kIndexMask) != 0) {
    return absl::DataLossError("cmos-rtc state: bad name, version, length or index");
  }
  std::lock_guard lock(mu_);
  index_ = d.bytes[1];
  std::copy(d.bytes.begin() + 2, d.bytes.end(), ram_.begin());
  return absl::OkStatus();
}

}  // namespace forkd::vmm
