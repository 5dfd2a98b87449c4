// forkd_bench: Fork RPC latency through a forkd it starts itself (unix
// socket, temporary data dir, probe-guest template), from the standby pool
// and cold; 16 and 100 sandboxes in one call; and, in the same run, the
// baseline: restore + reseed gate alone (forkd-vmm --restore of the same
// template snapshot, then gate::AdmitFork), without forkd's journal,
// namespace, tap, chains or RPC.
//
// Usage: forkd_bench [rounds] [--vmm PATH]   (root; /dev/kvm for real VMs)
// Without /dev/kvm it runs against the tests' stand-in VMM and says so: the
// daemon's own costs are then real, the VM's are not.
// Last line:
//   RESULT forkd_fork standby_p50_us=<n> cold_p50_us=<n> fork16_wall_ms=<n>
//          fork100_wall_ms=<n> baseline_p50_us=<n>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "agent/vsock_connect.h"
#include "forkd/api/forkd.grpc.pb.h"
#include "forkd/gate/reseed_gate.h"
#include "forkd/sandbox/vmm_child.h"
#include "grpcpp/grpcpp.h"

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "forkd_bench: %s\n", what.c_str());
  std::exit(1);
}

uint64_t Us(Clock::time_point a, Clock::time_point b) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
}

uint64_t P50(std::vector<uint64_t> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Forkd {
  pid_t pid = -1;
  std::unique_ptr<forkd::v1::Forkd::Stub> api;
  ~Forkd() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

void StartForkd(Forkd& f, const fs::path& dir, const std::string& vmm, uint32_t standby) {
  const std::string sock = (dir / "forkd.sock").string();
  std::vector<std::string> args = {FORKD_BENCH_FORKD, "--data-dir", (dir / "data").string(),
                                   "--listen", "unix:" + sock, "--vmm", vmm, "--vmm-keeper",
                                   FORKD_BENCH_KEEPER, "--probe-guest", FORKD_BENCH_PROBE_GUEST,
                                   "--max-sandboxes", "256", "--standby", std::to_string(standby),
                                   // hosts whose cgroup2 lacks controllers (forkd logs it)
                                   "--allow-missing-cgroup-controllers"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = (dir / "forkd.log").string();
  f.pid = ::fork();
  if (f.pid == 0) {
    if (!std::freopen(log.c_str(), "a", stderr)) _exit(127);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  auto ch = grpc::CreateChannel("unix:" + sock, grpc::InsecureChannelCredentials());
  if (!ch->WaitForConnected(std::chrono::system_clock::now() + 60s)) Die("forkd did not start");
  f.api = forkd::v1::Forkd::NewStub(ch);
}

void CreateTemplate(Forkd& f, const std::string& id) {
  grpc::ClientContext ctx;
  forkd::v1::CreateTemplateRequest req;
  req.set_template_id(id);
  req.mutable_probe();
  auto r = f.api->CreateTemplate(&ctx, req);
  forkd::v1::TemplateProgress p;
  while (r->Read(&p)) {
  }
  if (auto s = r->Finish(); !s.ok()) Die("CreateTemplate: " + s.error_message());
}

forkd::v1::ForkResponse Fork(Forkd& f, uint32_t n, bool cold) {
  grpc::ClientContext ctx;
  forkd::v1::ForkRequest req;
  req.set_template_id("bench");
  req.set_count(n);
  req.set_cold(cold);
  forkd::v1::ForkResponse resp;
  if (auto s = f.api->Fork(&ctx, req, &resp); !s.ok()) Die("Fork: " + s.error_message());
  return resp;
}

void TerminateAll(Forkd& f, const forkd::v1::ForkResponse& r) {
  for (const auto& sb : r.sandboxes()) {
    grpc::ClientContext ctx;
    forkd::v1::TerminateRequest req;
    req.set_sandbox_id(sb.sandbox_id());
    forkd::v1::TerminateResponse resp;
    if (auto s = f.api->Terminate(&ctx, req, &resp); !s.ok())
      Die("Terminate: " + s.error_message());
  }
}

void WaitPool(Forkd& f, uint32_t target) {
  for (int i = 0; i < 6000; i++) {  // hang guard: 60 s
    grpc::ClientContext ctx;
    forkd::v1::Capacity c;
    if (!f.api->GetCapacity(&ctx, {}, &c).ok()) Die("GetCapacity");
    for (const auto& p : c.standby()) {
      if (p.template_id() == "bench" && p.ready() >= target) return;
    }
    std::this_thread::sleep_for(10ms);
  }
  Die("the standby pool never filled");
}

// Restore + gate alone, on the template's snapshot.
uint64_t Baseline(const std::string& vmm, const fs::path& snap, const fs::path& dir, int i) {
  const std::string uds = (dir / ("b" + std::to_string(i) + ".sock")).string();
  const auto t0 = Clock::now();
  forkd::sandbox::VmmSpawnOptions o;
  o.keeper = FORKD_BENCH_KEEPER;  // as forkd spawns every VMM
  o.binary = vmm;
  o.keep_control = false;
  o.args = {"--restore", snap.string(), "--vsock-uds", uds};
  auto child = forkd::sandbox::VmmChild::Spawn(o);
  if (!child.ok()) Die(child.status().ToString());
  forkd::gate::ForkResources res;
  res.fork_id = "baseline";
  res.vmm_pidfd = child->TakePidfd();
  res.keeper_pidfd = child->TakeKeeperPidfd();
  if (auto s = child->Expect("READY", 30s); !s.ok()) Die("baseline restore: " + s.ToString());
  absl::Status g = forkd::gate::AdmitFork(
      res, forkd::agent::ConnectVsockMux(uds, 1024, forkd::agent::DeadlineIn(2s)), 1, std::nullopt,
      {});
  const uint64_t us = Us(t0, Clock::now());
  if (!g.ok()) Die("baseline gate: " + g.ToString());
  res.paths = {uds, uds + ".generation"};
  (void)forkd::gate::Reap(res);
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 30;
  std::string vmm = ::access("/dev/kvm", R_OK | W_OK) == 0 ? FORKD_BENCH_VMM : FORKD_BENCH_STANDIN;
  for (int i = 1; i < argc; i++) {
    if (std::string(argv[i]) == "--vmm" && i + 1 < argc) {
      vmm = argv[++i];
    } else {
      rounds = std::max(1, std::atoi(argv[i]));
    }
  }
  if (::geteuid() != 0) Die("needs root (namespaces, taps, nftables)");
  if (vmm == FORKD_BENCH_STANDIN) {
    std::printf(
        "NOTE: no usable /dev/kvm: forkd runs the tests' stand-in VMM (no VM). The "
        "daemon's own costs are real; restore and gate are a process, not a VM.\n");
  }
  char tmpl[] = "/tmp/forkd_bench.XXXXXX";
  if (!::mkdtemp(tmpl)) Die("mkdtemp");
  const fs::path dir = tmpl;
  std::vector<uint64_t> standby, cold, base;
  uint64_t fork16 = 0, fork100 = 0;
  {
    Forkd f;
    StartForkd(f, dir, vmm, 4);
    CreateTemplate(f, "bench");
    const fs::path snap = dir / "data" / "templates" / "bench" / "snap";
    WaitPool(f, 4);
    for (int i = 0; i < rounds; i++) {
      // Alternate the three measurements so load on the host hits all alike.
      {
        WaitPool(f, 4);
        const auto t0 = Clock::now();
        auto r = Fork(f, 1, false);
        standby.push_back(Us(t0, Clock::now()));
        if (!r.sandboxes(0).timings().from_standby())
          Die("standby fork did not come from the pool");
        TerminateAll(f, r);
      }
      {
        const auto t0 = Clock::now();
        auto r = Fork(f, 1, true);
        cold.push_back(Us(t0, Clock::now()));
        TerminateAll(f, r);
      }
      base.push_back(Baseline(vmm, snap, dir, i));
    }
    WaitPool(f, 4);
    for (uint32_t n : {16u, 100u}) {
      const auto t0 = Clock::now();
      auto r = Fork(f, n, true);
      const uint64_t ms = Us(t0, Clock::now()) / 1000;
      (n == 16 ? fork16 : fork100) = ms;
      TerminateAll(f, r);
    }
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  std::printf("fork rpc from standby: p50 %llu us over %d\n",
              static_cast<unsigned long long>(P50(standby)), rounds);
  std::printf(
      "fork rpc cold:         p50 %llu us over %d (%.2fx the baseline)\n",
      static_cast<unsigned long long>(P50(cold)), rounds,
      static_cast<double>(P50(cold)) / static_cast<double>(std::max<uint64_t>(1, P50(base))));
  std::printf("restore + gate alone:  p50 %llu us over %d (baseline)\n",
              static_cast<unsigned long long>(P50(base)), rounds);
  std::printf("16 in one call: %llu ms wall; 100 in one call: %llu ms wall\n",
              static_cast<unsigned long long>(fork16), static_cast<unsigned long long>(fork100));
  std::printf(
      "RESULT forkd_fork standby_p50_us=%llu cold_p50_us=%llu fork16_wall_ms=%llu "
      "fork100_wall_ms=%llu baseline_p50_us=%llu\n",
      static_cast<unsigned long long>(P50(standby)), static_cast<unsigned long long>(P50(cold)),
      static_cast<unsigned long long>(fork16), static_cast<unsigned long long>(fork100),
      static_cast<unsigned long long>(P50(base)));
  return 0;
}
