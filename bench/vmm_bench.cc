// vmm_bench: restore latency vs cold boot, and fork density.
//
// 1. Latency. A 256 MiB probe-guest snapshot is restored and, alternately,
//    the same guest is cold-booted, in one run. Both are timed from the
//    call (RestoreSnapshot / BuildForBoot) to the guest's first serial byte:
//    for a restore, the guest answers a byte queued in its UART before the
//    vCPUs start (it polls the UART every ~50 us of guest time); for a cold
//    boot, the first byte of "PROBE ready".
// 2. Density. 32 forkd-vmm processes restore the snapshot, each guest
//    dirties 1 MiB, and each process's unique memory is read from
//    /proc/<pid>/smaps_rollup (whole process) and /proc/<pid>/smaps (the
//    guest RAM mapping alone).
//
// 3. Isolation. forkd-vmm processes restore the snapshot jailed and
//    filtered (the default: --jail-*, per-thread seccomp) and, alternately,
//    with --no-jail --no-seccomp, in one run; each timed from spawn to its
//    READY line (restored, every thread filtered, vCPUs running). Needs root
//    (the jail); skipped with the reason otherwise.
//
// Last lines: RESULT vmm_restore ..., RESULT vmm_density ... and
// RESULT vmm_isolation ...
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "forkd/snapshot/snapshot_dir.h"
#include "forkd/vmm/builder.h"
#include "forkd/vmm/persist.h"
#include "tests/support/temp_dir.h"
#include "tests/vmm/probe_harness.h"
#include "tests/vmm/vmm_process.h"

namespace forkd::vmm::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::ProbeGuestPath;

constexpr uint64_t kMemBytes = 256ULL << 20;
constexpr int kLatencyRounds = 40;
constexpr int kForks = 32;
constexpr int kDirtyKib = 1024;
constexpr int kIsolationRounds = 30;
constexpr int kJailId = 61500;
const std::string kCmdline = "probe.report=100000000 probe.dirty_kib=" + std::to_string(kDirtyKib);

[[noreturn]] void Die(const std::string& what) {
  (void)std::fprintf(stderr, "vmm_bench: %s\n", what.c_str());
  std::exit(1);
}

struct Pipe {
  UniqueFd r, w;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) Die("pipe");
    r = UniqueFd(fds[0]);
    w = UniqueFd(fds[1]);
  }
};

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Blocks until the guest's first serial byte arrives on `fd`.
void WaitFirstByte(int fd) {
  char c;
  if (::read(fd, &c, 1) != 1) Die("no serial byte from guest");
}

// Restore-call -> RestoreSnapshot returned (VM built, state loaded), per round.
std::vector<double> g_restore_build_us;

double RestoreOnce(std::shared_ptr<const Kvm> kvm, const fs::path& dir) {
  Pipe out;
  auto t0 = Clock::now();
  auto m = RestoreSnapshot(std::move(kvm), dir, {out.w.get(), -1});
  if (!m.ok()) Die("restore: " + m.status().ToString());
  g_restore_build_us.push_back(Us(Clock::now() - t0));
  const uint8_t poke = 'p';
  (*m)->serial().EnqueueInput({&poke, 1});
  if (auto st = (*m)->Start(); !st.ok()) Die("start: " + st.ToString());
  WaitFirstByte(out.r.get());
  auto t1 = Clock::now();
  (*m)->Stop();
  return Us(t1 - t0);
}

// A standby fork: restored ahead of time (VM, memory slot, irqchip, state),
// timed from Start() -- which advances kvmclock and runs the vCPUs -- to the
// first serial byte. This is what a pre-provisioned fork costs on demand.
double StandbyOnce(std::shared_ptr<const Kvm> kvm, const fs::path& dir) {
  Pipe out;
  auto m = RestoreSnapshot(std::move(kvm), dir, {out.w.get(), -1});
  if (!m.ok()) Die("restore: " + m.status().ToString());
  const uint8_t poke = 'p';
  (*m)->serial().EnqueueInput({&poke, 1});
  auto t0 = Clock::now();
  if (auto st = (*m)->Start(); !st.ok()) Die("start: " + st.ToString());
  WaitFirstByte(out.r.get());
  auto t1 = Clock::now();
  (*m)->Stop();
  return Us(t1 - t0);
}

double ColdBootOnce(std::shared_ptr<const Kvm> kvm) {
  Pipe out;
  BootConfig cfg;
  cfg.kernel_path = ProbeGuestPath();
  cfg.cmdline = kCmdline;
  cfg.mem_size = kMemBytes;
  cfg.serial = {out.w.get(), -1};
  auto t0 = Clock::now();
  auto m = BuildForBoot(std::move(kvm), cfg);
  if (!m.ok()) Die("boot: " + m.status().ToString());
  if (auto st = (*m)->Start(); !st.ok()) Die("start: " + st.ToString());
  WaitFirstByte(out.r.get());
  auto t1 = Clock::now();
  (*m)->Stop();
  return Us(t1 - t0);
}

void MakeSnapshot(std::shared_ptr<const Kvm> kvm, const fs::path& dir) {
  testing::OutputCollector out;
  BootConfig cfg;
  cfg.kernel_path = ProbeGuestPath();
  cfg.cmdline = kCmdline;
  cfg.mem_size = kMemBytes;
  cfg.serial = {out.write_fd(), -1};
  auto m = BuildForBoot(std::move(kvm), cfg);
  if (!m.ok()) Die("boot: " + m.status().ToString());
  if (auto st = (*m)->Start(); !st.ok()) Die("start: " + st.ToString());
  if (!out.WaitFor("PROBE ready")) Die("probe guest never became ready");
  (*m)->Pause();
  if (auto st = SaveSnapshot(**m, dir); !st.ok()) Die("snapshot: " + st.ToString());
  (*m)->Stop();
}

// Sums "Key: N kB" fields of an smaps-style text, optionally only inside the
// mapping whose header line mentions `mapping`.
std::map<std::string, uint64_t> SmapsKib(const std::string& path, const std::string& mapping) {
  std::ifstream f(path);
  std::map<std::string, uint64_t> kib;
  std::string line;
  bool inside = mapping.empty();
  while (std::getline(f, line)) {
    bool is_header = !line.empty() && line.find(':') != std::string::npos &&
                     line.find(" kB") == std::string::npos && line.find('-') < line.find(' ');
    if (!mapping.empty() && is_header) {
      inside = line.find(mapping) != std::string::npos;
      continue;
    }
    if (!inside) continue;
    std::istringstream in(line);
    std::string key;
    uint64_t v = 0;
    std::string unit;
    if (in >> key >> v >> unit && unit == "kB") kib[key] += v;
  }
  return kib;
}

void Density(const fs::path& dir) {
  std::vector<std::unique_ptr<testing::VmmProcess>> forks;
  for (int i = 0; i < kForks; ++i) {
    auto p = testing::VmmProcess::Spawn({"--restore", dir.string()});
    if (!p.ok()) Die("spawn: " + p.status().ToString());
    if ((*p)->ReadLine() != "READY") Die("fork " + std::to_string(i) + " not ready");
    forks.push_back(*std::move(p));
  }
  for (auto& f : forks) f->input().Send("d");
  for (size_t i = 0; i < forks.size(); ++i) {
    if (!forks[i]->serial().WaitFor("PROBE ok dirty")) Die("fork did not dirty memory");
    // Park it: measuring does not need 32 spinning guests.
    forks[i]->Send("PAUSE");
    if (forks[i]->ReadLine() != "OK") Die("pause failed");
  }
  const std::string mem_file = fs::canonical(snapshot::MemoryPath(dir)).string();
  double proc_private = 0, guest_private = 0, guest_shared = 0, proc_pss = 0;
  for (auto& f : forks) {
    const std::string base = "/proc/" + std::to_string(f->pid());
    auto roll = SmapsKib(base + "/smaps_rollup", "");
    auto guest = SmapsKib(base + "/smaps", mem_file);
    proc_private += roll["Private_Clean:"] + roll["Private_Dirty:"];
    proc_pss += roll["Pss:"];
    guest_private += guest["Private_Clean:"] + guest["Private_Dirty:"];
    guest_shared += guest["Shared_Clean:"] + guest["Shared_Dirty:"];
  }
  for (auto& f : forks) f->Send("STOP");
  for (auto& f : forks) f->Wait();
  const double n = forks.size();
  std::printf("density: %d forkd-vmm processes, each guest dirtied %d KiB\n", kForks, kDirtyKib);
  std::printf(
      "  per fork: process private %.0f KiB (Pss %.0f KiB), guest-RAM mapping private "
      "%.0f KiB, guest-RAM shared %.0f KiB\n",
      proc_private / n, proc_pss / n, guest_private / n, guest_shared / n);
  std::printf("  target: unique <= 1.25 x dirtied = %.0f KiB\n", 1.25 * kDirtyKib);
  std::printf(
      "RESULT vmm_density forks=%d unique_kib_per_fork=%.0f guest_unique_kib_per_fork=%.0f "
      "shared_kib=%.0f\n",
      kForks, proc_private / n, guest_private / n, guest_shared / n);
}

enum class Isolation { kOn, kJailOnly, kOff };

// One forkd-vmm restore, spawn -> READY: jailed and filtered, jailed only,
// or neither.
double IsolatedRestoreOnce(const fs::path& dir, Isolation mode) {
  forkd::testing::TempDir root("vmm_bench_jail");
  std::vector<std::string> args = {"--restore", dir.string()};
  if (mode != Isolation::kOff) {
    args.insert(args.end(), {"--jail-root", root.path().string(), "--jail-uid",
                             std::to_string(kJailId), "--jail-gid", std::to_string(kJailId)});
  } else {
    args.push_back("--no-jail");
  }
  if (mode != Isolation::kOn) args.push_back("--no-seccomp");
  const auto t0 = Clock::now();
  auto p = testing::VmmProcess::Spawn(args);
  if (!p.ok()) Die("spawn: " + p.status().ToString());
  if (auto line = (*p)->ReadLine(); line != "READY") {
    Die("isolation: forkd-vmm answered '" + line.value_or("<none>") + "'");
  }
  const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  (*p)->Send("STOP");
  if ((*p)->Wait() != 0) Die("isolation: forkd-vmm did not stop cleanly");
  return us;
}

void Isolation(const fs::path& dir) {
  if (::geteuid() != 0) {
    std::printf("isolation: skipped (the jail needs root)\n");
    return;
  }
  // The jail uid reads the snapshot, as from a group-readable store.
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_read | fs::perms::others_exec);
  for (const auto& e : fs::directory_iterator(dir)) {
    fs::permissions(e.path(), fs::perms::others_read, fs::perm_options::add);
  }
  std::vector<double> on_us, off_us, jail_us;
  IsolatedRestoreOnce(dir, Isolation::kOn);  // warm every path
  IsolatedRestoreOnce(dir, Isolation::kOff);
  for (int i = 0; i < kIsolationRounds; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    on_us.push_back(IsolatedRestoreOnce(dir, Isolation::kOn));
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    off_us.push_back(IsolatedRestoreOnce(dir, Isolation::kOff));
    // Every third round also the jail without the filters, to tell the two
    // costs apart (not part of the ratio).
    if (i % 3 == 0) jail_us.push_back(IsolatedRestoreOnce(dir, Isolation::kJailOnly));
  }
  const double on50 = P50(on_us), off50 = P50(off_us);
  std::printf(
      "isolation: %d alternating forkd-vmm restores, spawn -> READY, jail + seccomp on "
      "against --no-jail --no-seccomp\n",
      kIsolationRounds);
  std::printf(
      "  on p50 %.0f us (min %.0f, max %.0f); off p50 %.0f us (min %.0f, max %.0f); "
      "target ratio <= 1.10\n",
      on50, *std::min_element(on_us.begin(), on_us.end()),
      *std::max_element(on_us.begin(), on_us.end()), off50,
      *std::min_element(off_us.begin(), off_us.end()),
      *std::max_element(off_us.begin(), off_us.end()));
  std::printf("  jail without seccomp p50 %.0f us (%zu rounds): the filters cost on - this\n",
              P50(jail_us), jail_us.size());
  std::printf("RESULT vmm_isolation restore_on_p50_us=%.0f restore_off_p50_us=%.0f ratio=%.2f\n",
              on50, off50, on50 / off50);
}

int Main() {
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) Die("signal(SIGPIPE): " + std::string(strerror(errno)));
  auto kvm_or = Kvm::Open();
  if (!kvm_or.ok()) Die(kvm_or.status().ToString());
  auto kvm = std::make_shared<const Kvm>(*std::move(kvm_or));
  const fs::path dir = fs::temp_directory_path() / ("vmm_bench." + std::to_string(getpid()));
  MakeSnapshot(kvm, dir);

  std::vector<double> restore_us, boot_us, standby_us;
  RestoreOnce(kvm, dir);  // warm the page cache and KVM's first-VM paths
  ColdBootOnce(kvm);
  g_restore_build_us.clear();
  for (int i = 0; i < kLatencyRounds; ++i) {
    // Let the previous round's VM teardown (15-25 ms of kernel work here,
    // partly deferred) finish before timing the next one.
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    restore_us.push_back(RestoreOnce(kvm, dir));
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    boot_us.push_back(ColdBootOnce(kvm));
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    standby_us.push_back(StandbyOnce(kvm, dir));
  }
  const double r50 = P50(restore_us), b50 = P50(boot_us);
  std::printf("latency: %d alternating rounds, 256 MiB probe guest, call -> first serial byte\n",
              kLatencyRounds);
  std::printf(
      "  restore p50 %.0f us (min %.0f, max %.0f); cold boot p50 %.0f us (min %.0f, max "
      "%.0f); target restore p50 < 2000 us\n",
      r50, *std::min_element(restore_us.begin(), restore_us.end()),
      *std::max_element(restore_us.begin(), restore_us.end()), b50,
      *std::min_element(boot_us.begin(), boot_us.end()),
      *std::max_element(boot_us.begin(), boot_us.end()));
  std::printf(
      "  restore split: call -> VM built and state loaded p50 %.0f us; the rest is "
      "Start -> first byte\n",
      P50(g_restore_build_us));
  std::printf("  standby fork (restored ahead, timed from Start) p50 %.0f us (min %.0f)\n",
              P50(standby_us), *std::min_element(standby_us.begin(), standby_us.end()));
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) == 3) {
    std::printf(
        "  host load average %.2f on %ld CPUs (KVM VM setup ioctls wait for RCU/SRCU "
        "grace periods, which stretch to scheduler ticks on a busy host)\n",
        load[0], sysconf(_SC_NPROCESSORS_ONLN));
  }
  std::printf("RESULT vmm_restore restore_p50_us=%.0f coldboot_p50_us=%.0f ratio=%.2f\n", r50, b50,
              b50 / r50);
  // The latency results are out before Density spawns its 32 processes (and may Die).
  if (std::fflush(stdout) != 0) Die("flush stdout: " + std::string(strerror(errno)));

  Density(dir);
  if (std::fflush(stdout) != 0) Die("flush stdout: " + std::string(strerror(errno)));
  Isolation(dir);
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}

}  // namespace
}  // namespace forkd::vmm::bench

int main() { return forkd::vmm::bench::Main(); }
