// Tier 2: the reseed gate end to end on real KVM with a fork's whole network
// footprint. gate_e2e_test proves process, socket and files for real
// forkd-vmm forks; tests/gate/reseed_gate_test proves tap and nftables chains
// against a stand-in process. Here each fork is both: a forkd-vmm restore of
// a probe agent (probe.agent=<mode>) on vsock AND virtio-net, attached to a
// tap of its own in a namespace the test creates, with that tap's nftables
// chains installed. Only reseeded=true admits the fork (everything stays);
// refuse, silence, a late answer and garbage reap it, and nothing of it is
// left: process, tap, nftables objects, socket and files.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/vsock_connect.h"
#include "common/unique_fd.h"
#include "forkd/gate/fork_resources.h"
#include "forkd/gate/reseed_gate.h"
#include "gtest/gtest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"
#include "tests/netfilter/netns_sockets.h"
#include "tests/support/requirements.h"
#include "tests/vmm/owned_fork.h"
#include "tests/vmm/vmm_process.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);
FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::vmm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// The probe's late mode busy-waits >= 10 s (probe/agent.cc), five times this.
constexpr auto kDeadline = 2000ms;
constexpr uint32_t kAgentPort = 1024;
// Two filter tables, so the reap has to find the tap's chains in the shard
// they were hashed to (ForkResources::nft_shards), not in a default table.
constexpr uint32_t kShards = 2;
constexpr char kSourceTap[] = "gtsrc";

bool ProcessGone(pid_t pid) { return ::waitpid(pid, nullptr, WNOHANG) == -1 && errno == ECHILD; }
bool ProcessRunning(pid_t pid) { return ::waitpid(pid, nullptr, WNOHANG) == 0; }

// True when one of `pid`'s open files is a tun/tap queue attached to `tap`
// (the kernel's fdinfo for a tun file names its interface: "iff:\t<name>").
bool HoldsTap(pid_t pid, const std::string& tap) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fdinfo", ec)) {
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      if (line == "iff:\t" + tap) return true;
    }
  }
  return false;
}

class GateTapE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ns = netfilter::CreateNetns();
    ASSERT_TRUE(ns.ok()) << ns.status();
    netns_ = std::move(*ns);
    auto nft = netfilter::Nftables::Open(netns_.get(), kShards);
    ASSERT_TRUE(nft.ok()) << nft.status();
    nft_.emplace(std::move(*nft));
    absl::Status s = nft_->EnsureSkeleton({.shards = kShards});
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_NO_FATAL_FAILURE(MakeTap(kSourceTap));
    dir_ = fs::temp_directory_path() / ("forkd_gate_tap_e2e." + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    // Forks the test did not reap (a failed assertion) are reaped here.
    for (auto& f : forks_) {
      if (f.resources.vmm_pidfd.valid() || !f.resources.tap.empty() || !f.resources.paths.empty()) {
        absl::Status s = gate::Reap(f.resources);
        EXPECT_TRUE(s.ok()) << s;
      }
    }
    forks_.clear();
    std::error_code ec;
    fs::remove_all(dir_, ec);
    // The namespace (and the source tap in it) goes with its last handle.
  }

  // Where a VMM finds the test namespace (this process keeps the handle).
  std::string NetnsPath() const {
    return "/proc/" + std::to_string(getpid()) + "/fd/" + std::to_string(netns_.get());
  }

  // A persistent tap in the test namespace, with no queue attached until a
  // VMM attaches by name.
  void MakeTap(const std::string& name) {
    netfilter::TapOptions o;
    o.name = name;
    o.persistent = true;
    o.vnet_hdr = true;
    auto creator = netfilter::CreateTap(netns_.get(), o);
    ASSERT_TRUE(creator.ok()) << creator.status();
  }

  bool LinkExists(const std::string& tap) {
    auto rt = netfilter::RtNetlink::Open(netns_.get());
    EXPECT_TRUE(rt.ok()) << rt.status();
    return rt.ok() && rt->LinkExists(tap);
  }
  bool TapListed(const std::string& tap) {
    auto taps = nft_->ListTaps();
    EXPECT_TRUE(taps.ok()) << taps.status();
    return taps.ok() && std::find(taps->begin(), taps->end(), tap) != taps->end();
  }
  // The namespace's whole ruleset as nft prints it.
  std::string Ruleset() {
    auto out = forkd::testing::NftInNetns(netns_.get(), "list ruleset");
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : std::string();
  }
  // Any object named after the tap (chains, pin sets and counters are all
  // "tap_<name>_...") or any dispatch-map element keyed by its name.
  static bool Mentions(const std::string& ruleset, const std::string& tap) {
    return ruleset.find("tap_" + tap + "_") != std::string::npos ||
           ruleset.find("\"" + tap + "\"") != std::string::npos;
  }

  // Boots a probe agent in `mode` with vsock and virtio-net on the source
  // tap, snapshots it once it listens, stops it.
  void Snapshot(const std::string& mode) {
    snap_ = dir_ / ("snap-" + mode);
    const std::string src_sock = (dir_ / ("src-" + mode + ".sock")).string();
    auto src = VmmProcess::Spawn(
        {"--kernel", ProbeGuestPath(), "--cmdline", "probe.scenario=agent probe.agent=" + mode,
         "--mem-mib", "64", "--vsock-cid", "3", "--vsock-uds", src_sock, "--net-tap", kSourceTap,
         "--net-netns", NetnsPath(), "--net-mac", "02:00:00:00:01:00"});
    ASSERT_TRUE(src.ok()) << src.status();
    ASSERT_EQ((*src)->ReadLine(), "READY");
    ASSERT_TRUE((*src)->serial().WaitFor("PROBE ok agent mode=" + mode + " cid=3").has_value())
        << (*src)->serial().text();
    EXPECT_TRUE(HoldsTap((*src)->pid(), kSourceTap)) << "the source VM is not on its tap";
    absl::Status saved = (*src)->SnapshotAndStop(snap_.string());
    ASSERT_TRUE(saved.ok()) << saved;
  }

  struct Fork {
    std::unique_ptr<VmmProcess> vmm;  // serial and control only: the pid is released
    pid_t pid = -1;
    std::string tap;
    std::string uds;
    fs::path dir;
    gate::ForkResources resources;
  };

  // A fork as forkd builds one: its tap and nftables chains first (owned by
  // its ForkResources from the moment they exist), then its own forkd-vmm
  // restored onto that tap with a MAC of its own.
  Fork& RestoreFork(const std::string& id, const std::string& tap, int index) {
    Fork& f = forks_.emplace_back();
    f.tap = tap;
    f.dir = dir_ / id;
    fs::create_directories(f.dir);
    f.uds = (f.dir / "vsock.sock").string();
    std::ofstream(f.dir / "memory.overlay") << "stand-in for the fork's dirty pages";
    f.resources.fork_id = id;
    f.resources.paths = {f.dir};
    auto netns = netfilter::OpenNetns(NetnsPath());
    EXPECT_TRUE(netns.ok()) << netns.status();
    if (!netns.ok()) return f;
    f.resources.netns = std::move(*netns);
    f.resources.nft_shards = kShards;

    MakeTap(tap);
    if (::testing::Test::HasFatalFailure()) return f;
    f.resources.tap = tap;
    netfilter::TapPolicy policy;
    policy.tap = tap;
    policy.guest_v4 = *netfilter::IpAddress::Parse("10.200.0." + std::to_string(10 + index));
    absl::Status added = nft_->AddTap(policy);
    EXPECT_TRUE(added.ok()) << added;

    char mac[32];
    std::snprintf(mac, sizeof mac, "02:00:00:00:02:%02x", index);
    auto vmm = SpawnOwnedFork({"--restore", snap_.string(), "--vsock-uds", f.uds, "--net-tap", tap,
                               "--net-netns", NetnsPath(), "--net-mac", mac},
                              f.resources);
    EXPECT_TRUE(vmm.ok()) << vmm.status();
    if (!vmm.ok()) return f;
    f.vmm = std::move(vmm->vmm);
    f.pid = vmm->pid;
    return f;
  }

  absl::Status Admit(Fork& f, uint64_t generation) {
    return gate::AdmitFork(f.resources,
                           agent::ConnectVsockMux(f.uds, kAgentPort, agent::DeadlineIn(10s)),
                           generation, std::nullopt, {.deadline = kDeadline});
  }

  // Everything the fork owns exists, and its VMM is on its own tap.
  void ExpectAllThere(const Fork& f) {
    EXPECT_TRUE(ProcessRunning(f.pid)) << f.tap;
    EXPECT_TRUE(HoldsTap(f.pid, f.tap)) << "fork VMM not attached to " << f.tap;
    EXPECT_TRUE(LinkExists(f.tap)) << f.tap;
    EXPECT_TRUE(TapListed(f.tap)) << f.tap;
    const std::string rules = Ruleset();
    for (const std::string& chain :
         {"tap_" + f.tap + "_egress", "tap_" + f.tap + "_inbound", "tap_" + f.tap + "_input"}) {
      EXPECT_NE(rules.find("chain " + chain + " {"), std::string::npos) << chain << "\n" << rules;
    }
    EXPECT_NE(rules.find("\"" + f.tap + "\""), std::string::npos) << "dispatch\n" << rules;
    EXPECT_TRUE(fs::exists(f.dir / "memory.overlay")) << f.dir;
    EXPECT_TRUE(fs::exists(f.uds)) << f.uds;
  }

  // Nothing of the fork is left, on the host or in the namespace.
  void ExpectNothingLeft(const Fork& f) {
    EXPECT_TRUE(ProcessGone(f.pid)) << "VMM process of " << f.tap << " survived the reap";
    EXPECT_FALSE(LinkExists(f.tap)) << "tap " << f.tap << " survived the reap";
    EXPECT_FALSE(TapListed(f.tap)) << "chains of " << f.tap << " survived the reap";
    const std::string rules = Ruleset();
    EXPECT_FALSE(Mentions(rules, f.tap))
        << "nftables objects of " << f.tap << " survived the reap:\n"
        << rules;
    EXPECT_FALSE(fs::exists(f.dir)) << "files survived the reap";
    EXPECT_FALSE(fs::exists(f.uds)) << "vsock socket survived the reap";
    EXPECT_FALSE(f.resources.vmm_pidfd.valid());
    EXPECT_TRUE(f.resources.tap.empty());
    EXPECT_TRUE(f.resources.paths.empty());
  }

  void ExpectReaped(const std::string& mode, gate::ReapCause cause, absl::StatusCode code) {
    ASSERT_NO_FATAL_FAILURE(Snapshot(mode));
    Fork& f = RestoreFork("fork-" + mode, "gt" + mode, 1);
    ASSERT_GT(f.pid, 0);
    ASSERT_NO_FATAL_FAILURE(ExpectAllThere(f));
    absl::Status s = Admit(f, 7);
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_EQ(gate::ReapCauseOf(s), cause) << s;
    EXPECT_NE(std::string(s.message()).find("fork fork-" + mode + " reaped"), std::string::npos)
        << s;
    ExpectNothingLeft(f);
    // The skeleton the other forks share is untouched.
    EXPECT_NE(Ruleset().find("chain forward {"), std::string::npos);
  }

  UniqueFd netns_;
  std::optional<netfilter::Nftables> nft_;
  fs::path dir_;
  fs::path snap_;
  std::deque<Fork> forks_;
};

TEST_F(GateTapE2eTest, HonestForksAreAdmittedWithTheirTapsAndChains) {
  ASSERT_NO_FATAL_FAILURE(Snapshot("honest"));
  Fork& a = RestoreFork("fork-a", "gthonest1", 1);
  Fork& b = RestoreFork("fork-b", "gthonest2", 2);
  ASSERT_GT(a.pid, 0);
  ASSERT_GT(b.pid, 0);
  absl::Status sa = Admit(a, 11);
  EXPECT_TRUE(sa.ok()) << sa;
  absl::Status sb = Admit(b, 12);
  EXPECT_TRUE(sb.ok()) << sb;
  ASSERT_TRUE(a.vmm->serial()
                  .WaitFor("PROBE ok agent-answered generation=11 resets=1 reseeds=1")
                  .has_value())
      << a.vmm->serial().text();
  ASSERT_TRUE(b.vmm->serial()
                  .WaitFor("PROBE ok agent-answered generation=12 resets=1 reseeds=1")
                  .has_value())
      << b.vmm->serial().text();
  // Admitted forks keep everything they own.
  ExpectAllThere(a);
  ExpectAllThere(b);
  // Reaping one (forkd's shutdown path) removes all of it and nothing of the
  // other's.
  absl::Status ra = gate::Reap(a.resources);
  EXPECT_TRUE(ra.ok()) << ra;
  ExpectNothingLeft(a);
  ExpectAllThere(b);
  absl::Status rb = gate::Reap(b.resources);
  EXPECT_TRUE(rb.ok()) << rb;
  ExpectNothingLeft(b);
  for (Fork* f : {&a, &b}) {
    EXPECT_TRUE(f->vmm->serial().Lines("PROBE fail").empty()) << f->vmm->serial().text();
  }
}

TEST_F(GateTapE2eTest, RefusingAgentIsReapedWithItsNetwork) {
  ExpectReaped("refuse", gate::ReapCause::kNotReseeded, absl::StatusCode::kFailedPrecondition);
}

TEST_F(GateTapE2eTest, SilentAgentIsReapedWithItsNetwork) {
  ExpectReaped("silent", gate::ReapCause::kNoAnswer, absl::StatusCode::kDeadlineExceeded);
}

TEST_F(GateTapE2eTest, LateAgentIsReapedWithItsNetwork) {
  ExpectReaped("late", gate::ReapCause::kNoAnswer, absl::StatusCode::kDeadlineExceeded);
}

TEST_F(GateTapE2eTest, GarbageAnswerIsReapedWithItsNetwork) {
  ExpectReaped("garbage", gate::ReapCause::kMalformed, absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace forkd::vmm::testing
