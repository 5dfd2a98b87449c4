// Test-only crash points of the fork pipeline. forkd accepts
// --test-fault-point NAME only when FORKD_ENABLE_TEST_FAULTS=1 is in its
// environment (forkd/daemon/flags.cc): the binary under test is the binary
// that ships, and a unit file or a stray flag alone cannot arm it. At an
// armed point forkd SIGKILLs itself, as a crash would, so the crash-recovery
// test can prove that a restart leaks nothing.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"

namespace forkd::pipeline {

enum class FaultPoint {
  kNone,
  kAfterJournal,  // the first record is durable, nothing else exists
  kAfterNetns,
  kAfterTap,
  kAfterChains,
  kAfterSpawn,  // the VMM runs (READY), the gate has not run
  kAfterGate,   // admitted, the "ready" record not yet written
};

absl::StatusOr<FaultPoint> ParseFaultPoint(std::string_view name);
std::string_view FaultPointName(FaultPoint p);
inline constexpr char kFaultPointNames[] =
    "after-journal, after-netns, after-tap, after-chains, after-spawn, after-gate";

// SIGKILLs this process when `armed` == `here`.
void MaybeCrash(FaultPoint armed, FaultPoint here);

}  // namespace forkd::pipeline
