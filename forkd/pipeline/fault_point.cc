#include "forkd/pipeline/fault_point.h"

#include <signal.h>

#include <array>
#include <string>
#include <utility>

namespace forkd::pipeline {
namespace {
constexpr std::array<std::pair<FaultPoint, std::string_view>, 6> kNames = {{
    {FaultPoint::kAfterJournal, "after-journal"},
    {FaultPoint::kAfterNetns, "after-netns"},
    {FaultPoint::kAfterTap, "after-tap"},
    {FaultPoint::kAfterChains, "after-chains"},
    {FaultPoint::kAfterSpawn, "after-spawn"},
    {FaultPoint::kAfterGate, "after-gate"},
}};
}  // namespace

absl::StatusOr<FaultPoint> ParseFaultPoint(std::string_view name) {
  for (const auto& [p, n] : kNames) {
    if (n == name) return p;
  }
  return absl::InvalidArgumentError("unknown fault point '" + std::string(name) +
                                    "' (known: " + kFaultPointNames + ")");
}

std::string_view FaultPointName(FaultPoint p) {
  for (const auto& [q, n] : kNames) {
    if (q == p) return n;
  }
  return "none";
}

void MaybeCrash(FaultPoint armed, FaultPoint here) {
  if (armed != FaultPoint::kNone && armed == here) ::raise(SIGKILL);
}

}  // namespace forkd::pipeline
