// fork_bench: time from restoring a fork to its agent's first answer.
//
// One probe-guest snapshot (probe.scenario=agent, honest agent listening on
// vsock port 1024) is forked >= 50 times, each fork its own forkd-vmm
// process with its own vsock socket, cycling through three kinds of round:
//   (a) restore alone: process spawn (--restore) -> its "READY" line;
//   (b) restore + gate: spawn -> READY -> ConnectVsockMux(uds, 1024) ->
//       gate::AdmitFork (NotifyForked round trip, reseeded=true) -> OK;
//   (c) as (b) with --no-ioeventfd: the guest's virtqueue notifies are MMIO
//       exits handled on the vCPU thread instead of KVM_IOEVENTFD (baseline).
// All include fork/exec of forkd-vmm. Every fork is reaped (pidfd kill +
// its directory removed) before the next round.
//
// Last lines: RESULT fork_first_answer p50_us=<n> restore_p50_us=<n>
//             RESULT fork_notify ioeventfd_p50_us=<n> mmio_exit_p50_us=<n> ratio=<mmio/ioeventfd>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "agent/vsock_connect.h"
#include "bench/probe_snapshot.h"
#include "forkd/gate/fork_resources.h"
#include "forkd/gate/reseed_gate.h"
#include "tests/vmm/owned_fork.h"
#include "tests/vmm/vmm_process.h"

namespace forkd::vmm::bench {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::VmmProcess;

constexpr uint32_t kAgentPort = 1024;
constexpr double kTargetUs = 10000;

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Fork {
  std::unique_ptr<VmmProcess> vmm;
  gate::ForkResources resources;
  std::string uds;
};

// Spawns a forkd-vmm restoring `snap` and waits for READY; the process is
// owned by the returned ForkResources (pidfd) from then on.
Fork Restore(const fs::path& snap, const fs::path& dir, const std::string& id,
             bool ioeventfd = true) {
  Fork f;
  const fs::path fork_dir = dir / id;
  fs::create_directories(fork_dir);
  f.uds = (fork_dir / "vsock.sock").string();
  std::vector<std::string> args = {"--restore", snap.string(), "--vsock-uds", f.uds};
  if (!ioeventfd) args.push_back("--no-ioeventfd");
  f.resources.fork_id = id;
  f.resources.paths = {fork_dir};
  auto vmm = testing::SpawnOwnedFork(args, f.resources);
  if (!vmm.ok()) Die("fork " + id + ": " + vmm.status().ToString());
  f.vmm = std::move(vmm->vmm);
  return f;
}

void ReapOrDie(Fork& f) {
  absl::Status s = gate::Reap(f.resources);
  if (!s.ok()) Die("reap: " + s.ToString());
}

int Main(int rounds_per_kind) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) Die("needs read-write /dev/kvm");
  const fs::path dir = fs::temp_directory_path() / ("forkd_fork_bench." + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path snap = MakeProbeSnapshot(dir, "probe.scenario=agent probe.agent=honest",
                                          "PROBE ok agent mode=honest");

  std::vector<double> restore_us, answer_us, ready_us, connect_us, notify_us, warm_connect_us;
  std::vector<double> mmio_answer_us, mmio_connect_us, mmio_notify_us;
  for (int round = 0; round < 3 * rounds_per_kind; round++) {
    const std::string id = "fork" + std::to_string(round);
    const bool gate_round = round % 3 != 0;
    const bool ioeventfd = round % 3 != 2;
    const auto t0 = Clock::now();
    Fork f = Restore(snap, dir, id, ioeventfd);
    if (!gate_round) {
      restore_us.push_back(Us(Clock::now() - t0));
      ReapOrDie(f);
      continue;
    }
    const auto t_ready = Clock::now();
    auto conn = agent::ConnectVsockMux(f.uds, kAgentPort, agent::DeadlineIn(5s));
    const auto t_connected = Clock::now();
    absl::Status s = gate::AdmitFork(f.resources, std::move(conn), static_cast<uint64_t>(round),
                                     std::nullopt, {.deadline = 5000ms});
    const auto t_answered = Clock::now();
    const double us = Us(t_answered - t0);
    if (!s.ok()) Die("gate refused fork " + id + ": " + s.ToString());  // already reaped
    if (!ioeventfd) {
      mmio_answer_us.push_back(us);
      mmio_connect_us.push_back(Us(t_connected - t_ready));
      mmio_notify_us.push_back(Us(t_answered - t_connected));
      ReapOrDie(f);
      continue;
    }
    ready_us.push_back(Us(t_ready - t0));
    connect_us.push_back(Us(t_connected - t_ready));
    notify_us.push_back(Us(t_answered - t_connected));
    answer_us.push_back(us);
    // The same CONNECT to the now-running fork. Not a fast path: the probe
    // prints its "agent-answered" line right after answering, one exit per
    // serial byte, and polls vsock only between those.
    const auto t_warm = Clock::now();
    auto warm = agent::ConnectVsockMux(f.uds, kAgentPort, agent::DeadlineIn(5s));
    if (!warm.ok()) Die("second connect to fork " + id + ": " + warm.status().ToString());
    warm_connect_us.push_back(Us(Clock::now() - t_warm));
    ReapOrDie(f);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);

  const double a50 = P50(answer_us), r50 = P50(restore_us);
  std::printf("fork_bench: %d forks of one snapshot (64 MiB probe guest, forkd-vmm processes)\n",
              3 * rounds_per_kind);
  std::printf("  restore -> READY: p50 %.0f us (min %.0f, max %.0f), n=%zu\n", r50,
              *std::min_element(restore_us.begin(), restore_us.end()),
              *std::max_element(restore_us.begin(), restore_us.end()), restore_us.size());
  std::printf(
      "  restore -> NotifyForked answered (gate OK): p50 %.0f us (min %.0f, max %.0f), n=%zu\n",
      a50, *std::min_element(answer_us.begin(), answer_us.end()),
      *std::max_element(answer_us.begin(), answer_us.end()), answer_us.size());
  std::printf(
      "    of which: spawn -> READY p50 %.0f us, CONNECT 1024 -> OK p50 %.0f us, NotifyForked "
      "round trip p50 %.0f us\n",
      P50(ready_us), P50(connect_us), P50(notify_us));
  std::printf("    a second CONNECT to the running fork afterwards: p50 %.0f us\n",
              P50(warm_connect_us));
  std::printf("  target fork_first_answer p50 < %.0f us: %s\n", kTargetUs,
              a50 < kTargetUs ? "met" : "NOT met");
  const double m50 = P50(mmio_answer_us);
  std::printf(
      "  same with --no-ioeventfd (notifies are MMIO exits): p50 %.0f us (min %.0f, max %.0f), "
      "n=%zu; CONNECT p50 %.0f us, NotifyForked round trip p50 %.0f us\n",
      m50, *std::min_element(mmio_answer_us.begin(), mmio_answer_us.end()),
      *std::max_element(mmio_answer_us.begin(), mmio_answer_us.end()), mmio_answer_us.size(),
      P50(mmio_connect_us), P50(mmio_notify_us));
  std::printf("RESULT fork_first_answer p50_us=%.0f restore_p50_us=%.0f\n", a50, r50);
  std::printf("RESULT fork_notify ioeventfd_p50_us=%.0f mmio_exit_p50_us=%.0f ratio=%.2f\n", a50,
              m50, m50 / a50);
  return 0;
}

}  // namespace
}  // namespace forkd::vmm::bench

// Optional argument: rounds per kind (default 30, i.e. 90 forks).
int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 30;
  if (rounds < 1) {
    (void)std::fprintf(stderr, "usage: fork_bench [rounds per kind >= 1]\n");
    return 2;
  }
  return forkd::vmm::bench::Main(rounds);
}
