// vmm_spawn_bench: what linking forkd-vmm statically buys per fork.
//
// forkd spawns one forkd-vmm process per fork, so the VMM's own exec cost is
// on every fork's critical path. This restores one probe-guest snapshot with
// the shipped (static) forkd-vmm and with the same sources linked against
// shared libraries (forkd-vmm-dynamic, built only for this benchmark),
// alternating, and times spawn -> "READY" (vCPUs running). Each fork is
// killed and reaped before the next.
//
// Last line: RESULT vmm_spawn static_p50_us=<n> dynamic_p50_us=<n> speedup=<x>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/probe_snapshot.h"
#include "tests/vmm/vmm_process.h"

namespace forkd::vmm::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kRoundsPerKind = 40;

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double SpawnToReady(const std::string& binary, const fs::path& snap, const fs::path& dir, int n) {
  const std::string uds = (dir / ("fork" + std::to_string(n) + ".sock")).string();
  const auto t0 = Clock::now();
  auto vmm =
      testing::VmmProcess::SpawnBinary(binary, {"--restore", snap.string(), "--vsock-uds", uds});
  if (!vmm.ok()) Die("spawn " + binary + ": " + vmm.status().ToString());
  if ((*vmm)->ReadLine() != "READY") Die(binary + " did not report READY");
  const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  (*vmm)->Send("STOP");
  (*vmm)->ReadLine();
  if ((*vmm)->Wait() != 0) Die(binary + " did not stop cleanly");
  return us;
}

int Main() {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) Die("needs read-write /dev/kvm");
  const fs::path dir =
      fs::temp_directory_path() / ("forkd_spawn_bench." + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path snap = MakeProbeSnapshot(dir, "probe.scenario=agent probe.agent=honest",
                                          "PROBE ok agent mode=honest");
  std::vector<double> static_us, dynamic_us;
  for (int i = 0; i < 2 * kRoundsPerKind; ++i) {
    if (i % 2 == 0) {
      static_us.push_back(SpawnToReady(testing::ForkdVmmPath(), snap, dir, i));
    } else {
      dynamic_us.push_back(SpawnToReady(FORKD_VMM_DYNAMIC_PATH, snap, dir, i));
    }
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  const double s50 = P50(static_us), d50 = P50(dynamic_us);
  std::printf("vmm_spawn_bench: %d restores of one snapshot per build, alternating\n",
              kRoundsPerKind);
  std::printf("  static  forkd-vmm spawn -> READY: p50 %.0f us (min %.0f)\n", s50,
              *std::min_element(static_us.begin(), static_us.end()));
  std::printf("  dynamic forkd-vmm spawn -> READY: p50 %.0f us (min %.0f)\n", d50,
              *std::min_element(dynamic_us.begin(), dynamic_us.end()));
  std::printf("RESULT vmm_spawn static_p50_us=%.0f dynamic_p50_us=%.0f speedup=%.2f\n", s50, d50,
              d50 / s50);
  return 0;
}

}  // namespace
}  // namespace forkd::vmm::bench

int main() { return forkd::vmm::bench::Main(); }
