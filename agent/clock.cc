#include "agent/clock.h"

#include <time.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace forkd::agent {
namespace {

constexpr int64_t kNsPerSec = 1'000'000'000;

}  // namespace

WallClock SystemWallClock() {
  return WallClock{
      .now_ns =
          [] {
            timespec ts{};
            // CLOCK_REALTIME cannot fail with a valid pointer.
            ::clock_gettime(CLOCK_REALTIME, &ts);
            return int64_t{ts.tv_sec} * kNsPerSec + ts.tv_nsec;
          },
      .set_ns =
          [](int64_t ns) {
            const timespec ts{.tv_sec = ns / kNsPerSec, .tv_nsec = ns % kNsPerSec};
            if (::clock_settime(CLOCK_REALTIME, &ts) != 0) {
              return ErrnoStatus(errno, "clock_settime CLOCK_REALTIME");
            }
            return absl::OkStatus();
          },
  };
}

absl::StatusOr<int64_t> SyncWallClock(int64_t host_ns, const WallClock& clock) {
  if (host_ns <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("host_wall_clock_ns is ", host_ns, "; the host must send its clock"));
  }
  const int64_t step = host_ns - clock.now_ns();
  if (step <= kMaxClockDriftNs && step >= -kMaxClockDriftNs) return 0;
  FORKD_RETURN_IF_ERROR(clock.set_ns(host_ns));
  return step;
}

}  // namespace forkd::agent
