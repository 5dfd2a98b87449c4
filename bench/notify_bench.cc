// notify_bench: the round-trip cost of one virtqueue notification, through
// KVM_IOEVENTFD + the notifier thread vs. the MMIO exit handled on the vCPU
// thread, in one run.
//
// The probe guest (probe.scenario=rng probe.rng_bench=N) times N back-to-back
// 64-byte virtio-rng requests with its TSC (notify, then poll the used ring),
// on a machine with ioeventfd and, alternately, one without. The guest TSC is
// the host TSC on kvm_pvm; cycles are converted with the vCPU's TSC kHz.
//
// Last line: RESULT virtio_notify ioeventfd_ns=<p50 per request>
//            mmio_exit_ns=<p50 per request> ratio=<mmio / ioeventfd>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/vmm/probe_harness.h"

namespace forkd::vmm::bench {
namespace {

constexpr int kRounds = 10;
constexpr uint64_t kRequests = 2000;

[[noreturn]] void Die(const std::string& what) {
  (void)std::fprintf(stderr, "notify_bench: %s\n", what.c_str());
  std::exit(1);
}

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Nanoseconds per request of one boot.
double OneRound(bool ioeventfd) {
  VirtioConfig cfg;
  cfg.rng = true;
  cfg.ioeventfd = ioeventfd;
  auto vm = testing::BootProbe("probe.scenario=rng probe.rng_bench=" + std::to_string(kRequests),
                               64 << 20, 1, cfg);
  if (!vm.ok()) Die("boot: " + vm.status().ToString());
  if (!vm->out->WaitFor("PROBE rng-bench").has_value()) Die("no result: " + vm->out->text());
  vm->machine->Pause();
  auto state = vm->machine->SaveState();
  if (!state.ok()) Die("save state: " + state.status().ToString());
  const uint32_t tsc_khz = state->vcpus.at(0).tsc_khz;
  const uint64_t mmio = vm->machine->virtio_devices().at(0)->mmio_notifies();
  const uint64_t kicks = vm->machine->notifier_kicks();
  vm->machine->Stop();
  // The path under test must be the one taken, and only it. (Kicks can be
  // fewer than requests: a kick drains every available buffer, and notifies
  // that arrive meanwhile add up in one eventfd count.)
  if (ioeventfd ? (mmio != 0 || kicks == 0) : (kicks != 0 || mmio < kRequests)) {
    Die("notifies took the wrong path: mmio " + std::to_string(mmio) + ", notifier " +
        std::to_string(kicks));
  }
  const auto lines = vm->out->Lines("PROBE rng-bench n=");
  if (lines.size() != 1 || tsc_khz == 0) Die("bad result: " + vm->out->text());
  const size_t at = lines[0].find(" tsc=");
  if (at == std::string::npos) Die("bad result line: " + lines[0]);
  const double cycles = std::strtod(lines[0].c_str() + at + 5, nullptr);
  return cycles / kRequests * 1e6 / tsc_khz;
}

int Main() {
  std::vector<double> io, mmio;
  OneRound(true);  // warm up
  for (int i = 0; i < kRounds; ++i) {
    io.push_back(OneRound(true));
    mmio.push_back(OneRound(false));
  }
  const double i50 = P50(io), m50 = P50(mmio);
  std::printf("notify_bench: %d alternating boots, %llu virtio-rng requests each (probe guest)\n",
              kRounds, static_cast<unsigned long long>(kRequests));
  std::printf("  ioeventfd + notifier thread: p50 %.0f ns/request (min %.0f, max %.0f)\n", i50,
              *std::min_element(io.begin(), io.end()), *std::max_element(io.begin(), io.end()));
  std::printf("  MMIO exit on the vCPU thread: p50 %.0f ns/request (min %.0f, max %.0f)\n", m50,
              *std::min_element(mmio.begin(), mmio.end()),
              *std::max_element(mmio.begin(), mmio.end()));
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) == 3) {
    std::printf("  host load average %.2f on %ld CPUs\n", load[0], sysconf(_SC_NPROCESSORS_ONLN));
  }
  std::printf("RESULT virtio_notify ioeventfd_ns=%.0f mmio_exit_ns=%.0f ratio=%.2f\n", i50, m50,
              m50 / i50);
  return 0;
}

}  // namespace
}  // namespace forkd::vmm::bench

int main() { return forkd::vmm::bench::Main(); }
