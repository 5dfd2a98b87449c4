#include "agent/clock.h"

#include <optional>

#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

constexpr int64_t kGuestNow = 1'700'000'000'000'000'000;
constexpr int64_t kMs = 1'000'000;

// A guest clock frozen at kGuestNow that records what it was set to.
struct FakeClock {
  std::optional<int64_t> set_to;
  absl::Status set_result = absl::OkStatus();
  WallClock Get() {
    return {.now_ns = [] { return kGuestNow; },
            .set_ns =
                [this](int64_t ns) {
                  set_to = ns;
                  return set_result;
                }};
  }
};

TEST(ClockTest, StepsForwardWhenTheGuestIsBehindByMoreThan500ms) {
  FakeClock clock;
  auto step = SyncWallClock(kGuestNow + 501 * kMs, clock.Get());
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(*step, 501 * kMs);
  EXPECT_EQ(clock.set_to, kGuestNow + 501 * kMs);
}

TEST(ClockTest, StepsBackWhenTheGuestIsAhead) {
  FakeClock clock;
  auto step = SyncWallClock(kGuestNow - 3000 * kMs, clock.Get());
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(*step, -3000 * kMs);
  EXPECT_EQ(clock.set_to, kGuestNow - 3000 * kMs);
}

TEST(ClockTest, LeavesTheClockAloneWithin500ms) {
  for (int64_t drift : {int64_t{0}, 499 * kMs, -499 * kMs, 500 * kMs, -500 * kMs}) {
    FakeClock clock;
    auto step = SyncWallClock(kGuestNow + drift, clock.Get());
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_EQ(*step, 0) << "drift " << drift;
    EXPECT_FALSE(clock.set_to.has_value()) << "drift " << drift;
  }
}

TEST(ClockTest, RefusesAMissingHostClock) {
  FakeClock clock;
  auto step = SyncWallClock(0, clock.Get());
  EXPECT_EQ(step.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(clock.set_to.has_value());
}

TEST(ClockTest, ReportsASetterFailure) {
  FakeClock clock;
  clock.set_result = absl::PermissionDeniedError("clock_settime: EPERM");
  auto step = SyncWallClock(kGuestNow + 10'000 * kMs, clock.Get());
  EXPECT_EQ(step.status().code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace forkd::agent
