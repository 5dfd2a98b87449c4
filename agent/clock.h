// Steps the guest's wall clock to the host's after a restore: a snapshot's
// CLOCK_REALTIME is frozen at snapshot time, so every fork starts in the past.
// CLOCK_MONOTONIC is left alone: it cannot be set, and it resumes continuously.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd::agent {

// Drift up to this much is tolerated: stepping a clock is visible to every
// program, so only a real gap is worth it.
inline constexpr int64_t kMaxClockDriftNs = 500'000'000;

// Injectable so tests never set the machine's clock.
struct WallClock {
  std::function<int64_t()> now_ns;
  std::function<absl::Status(int64_t ns)> set_ns;
};

// CLOCK_REALTIME via clock_gettime / clock_settime.
WallClock SystemWallClock();

// Sets the clock to `host_ns` when |host_ns - now| > kMaxClockDriftNs and
// returns the step applied (0 when within tolerance). host_ns <= 0 is refused:
// a host that sent no clock is a host bug, and skipping silently would hide it.
absl::StatusOr<int64_t> SyncWallClock(int64_t host_ns, const WallClock& clock);

}  // namespace forkd::agent
