// Tier 2: the fork-correctness gate end to end on real KVM. A probe guest
// whose stand-in agent (forkd/vmm/probe/agent.cc, probe.agent=<mode>) listens
// on vsock port 1024 is snapshotted once listening; each fork is restored as
// its own forkd-vmm process with its own vsock socket, and gate::AdmitFork
// talks to it through ConnectVsockMux. The same assertions as
// tests/gate/reseed_gate_test.cc (there against a host-process stand-in):
// only reseeded=true admits the fork; every other outcome reaps it, and the
// process and its files are gone afterwards.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "agent/client.h"
#include "agent/vsock_connect.h"
#include "forkd/gate/fork_resources.h"
#include "forkd/gate/reseed_gate.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/vmm/owned_fork.h"
#include "tests/vmm/vmm_process.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kKvm);

namespace forkd::vmm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// The probe's late mode busy-waits >= 10 s (probe/agent.cc), five times this.
constexpr auto kDeadline = 2000ms;
constexpr uint32_t kAgentPort = 1024;

// A child that was waited for must never be signalled by pid again; this
// only waits (WNOHANG), so it is safe either way.
bool ProcessGone(pid_t pid) { return ::waitpid(pid, nullptr, WNOHANG) == -1 && errno == ECHILD; }
bool ProcessRunning(pid_t pid) { return ::waitpid(pid, nullptr, WNOHANG) == 0; }

class GateE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("forkd_gate_e2e." + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    // Forks the test did not reap (a failed assertion) are reaped here.
    for (auto& f : forks_) {
      if (f.resources.vmm_pidfd.valid() || !f.resources.paths.empty()) {
        EXPECT_TRUE(gate::Reap(f.resources).ok());
      }
    }
    forks_.clear();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Boots a probe agent in `mode`, snapshots it once it listens, stops it.
  void Snapshot(const std::string& mode) {
    snap_ = dir_ / ("snap-" + mode);
    const std::string src_sock = (dir_ / ("src-" + mode + ".sock")).string();
    auto src = VmmProcess::Spawn({"--kernel", ProbeGuestPath(), "--cmdline",
                                  "probe.scenario=agent probe.agent=" + mode, "--mem-mib", "64",
                                  "--vsock-cid", "3", "--vsock-uds", src_sock});
    ASSERT_TRUE(src.ok()) << src.status();
    ASSERT_EQ((*src)->ReadLine(), "READY");
    ASSERT_TRUE((*src)->serial().WaitFor("PROBE ok agent mode=" + mode + " cid=3").has_value())
        << (*src)->serial().text();
    absl::Status saved = (*src)->SnapshotAndStop(snap_.string());
    ASSERT_TRUE(saved.ok()) << saved;
  }

  struct Fork {
    std::unique_ptr<VmmProcess> vmm;  // serial and control only: the pid is released
    pid_t pid = -1;
    std::string uds;
    fs::path dir;
    gate::ForkResources resources;
  };

  // Restores a fork of the snapshot as its own forkd-vmm process, owned from
  // here on by its ForkResources (pidfd + its directory).
  Fork& RestoreFork(const std::string& id) {
    Fork& f = forks_.emplace_back();
    f.dir = dir_ / id;
    fs::create_directories(f.dir);
    f.uds = (f.dir / "vsock.sock").string();
    std::ofstream(f.dir / "memory.overlay") << "stand-in for the fork's dirty pages";
    f.resources.fork_id = id;
    f.resources.paths = {f.dir};
    auto vmm = SpawnOwnedFork({"--restore", snap_.string(), "--vsock-uds", f.uds}, f.resources);
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

  void ExpectReaped(const std::string& mode, gate::ReapCause cause, absl::StatusCode code) {
    ASSERT_NO_FATAL_FAILURE(Snapshot(mode));
    Fork& f = RestoreFork("fork-" + mode);
    ASSERT_GT(f.pid, 0);
    ASSERT_TRUE(ProcessRunning(f.pid));
    absl::Status s = Admit(f, 7);
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_EQ(gate::ReapCauseOf(s), cause) << s;
    EXPECT_NE(std::string(s.message()).find("fork fork-" + mode + " reaped"), std::string::npos)
        << s;
    EXPECT_TRUE(ProcessGone(f.pid)) << "VMM process survived the reap";
    EXPECT_FALSE(f.resources.vmm_pidfd.valid());
    EXPECT_TRUE(f.resources.paths.empty());
    EXPECT_FALSE(fs::exists(f.dir)) << "files survived the reap";
    EXPECT_FALSE(fs::exists(f.uds)) << "vsock socket survived the reap";
  }

  fs::path dir_;
  fs::path snap_;
  std::deque<Fork> forks_;
};

TEST_F(GateE2eTest, HonestForksAreAdmittedAndReseededApart) {
  ASSERT_NO_FATAL_FAILURE(Snapshot("honest"));
  Fork& a = RestoreFork("fork-a");
  Fork& b = RestoreFork("fork-b");
  ASSERT_GT(a.pid, 0);
  ASSERT_GT(b.pid, 0);
  EXPECT_TRUE(Admit(a, 11).ok());
  EXPECT_TRUE(Admit(b, 12).ok());
  // Admitted forks keep running, with their files.
  EXPECT_TRUE(ProcessRunning(a.pid));
  EXPECT_TRUE(ProcessRunning(b.pid));
  EXPECT_TRUE(a.resources.vmm_pidfd.valid());
  EXPECT_TRUE(fs::exists(a.uds));
  // Each fork saw its transport reset and reports its own generation and a
  // PRNG state of its own: the two shared every byte of it at the snapshot.
  auto a_line =
      a.vmm->serial().WaitFor("PROBE ok agent-answered generation=11 resets=1 reseeds=1 prng=");
  auto b_line =
      b.vmm->serial().WaitFor("PROBE ok agent-answered generation=12 resets=1 reseeds=1 prng=");
  ASSERT_TRUE(a_line.has_value()) << a.vmm->serial().text();
  ASSERT_TRUE(b_line.has_value()) << b.vmm->serial().text();
  const auto prng_of = [](const std::string& text) {
    const size_t at = text.find(" prng=");
    return text.substr(at, text.find('\n', at) - at);
  };
  EXPECT_NE(prng_of(a.vmm->serial().text()), prng_of(b.vmm->serial().text()));
  // Reaping an admitted fork (forkd's shutdown path) removes it too.
  for (Fork* f : {&a, &b}) {
    EXPECT_TRUE(gate::Reap(f->resources).ok());
    EXPECT_TRUE(ProcessGone(f->pid));
    EXPECT_FALSE(fs::exists(f->dir));
  }
}

TEST_F(GateE2eTest, RefusingAgentIsReaped) {
  ExpectReaped("refuse", gate::ReapCause::kNotReseeded, absl::StatusCode::kFailedPrecondition);
}

TEST_F(GateE2eTest, SilentAgentIsReaped) {
  ExpectReaped("silent", gate::ReapCause::kNoAnswer, absl::StatusCode::kDeadlineExceeded);
}

TEST_F(GateE2eTest, LateAgentIsReaped) {
  ExpectReaped("late", gate::ReapCause::kNoAnswer, absl::StatusCode::kDeadlineExceeded);
}

// The late agent is not a silent one: without the gate's deadline (only the
// hang guard) its honest answer does arrive, after its >= 10 s busy wait.
TEST_F(GateE2eTest, LateAgentDoesAnswerWithoutTheDeadline) {
  ASSERT_NO_FATAL_FAILURE(Snapshot("late"));
  Fork& f = RestoreFork("fork-late-patient");
  ASSERT_GT(f.pid, 0);
  auto conn = agent::ConnectVsockMux(f.uds, kAgentPort, agent::DeadlineIn(10s));
  ASSERT_TRUE(conn.ok()) << conn.status();
  agent::AgentClient client(std::move(*conn));
  const auto start = std::chrono::steady_clock::now();
  const agent::NotifyForkedResult result =
      client.NotifyForked({.generation = 21}, agent::DeadlineIn(kHangGuard));
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  EXPECT_TRUE(result.reseeded()) << agent::OutcomeName(result.outcome) << ": " << result.detail;
  std::printf("late agent answered after %lld ms (gate deadline %lld ms)\n",
              static_cast<long long>(waited.count()), static_cast<long long>(kDeadline.count()));
  EXPECT_TRUE(gate::Reap(f.resources).ok());
  EXPECT_TRUE(ProcessGone(f.pid));
  EXPECT_FALSE(fs::exists(f.dir));
}

// The honest mode (HonestForksAreAdmittedAndReseededApart) is the positive
// control for these three: the same agent, reseeded=true, each with one more
// defect in its answer.
TEST_F(GateE2eTest, ReseededForkWithANetworkErrorIsReaped) {
  ExpectReaped("neterr", gate::ReapCause::kNetworkError, absl::StatusCode::kFailedPrecondition);
}

TEST_F(GateE2eTest, ReseededForkWithAGenerationErrorIsReaped) {
  ExpectReaped("generr", gate::ReapCause::kGenerationError, absl::StatusCode::kFailedPrecondition);
}

TEST_F(GateE2eTest, ReseededForkEchoingAnotherGenerationIsReaped) {
  ExpectReaped("wronggen", gate::ReapCause::kWrongGeneration, absl::StatusCode::kDataLoss);
}

TEST_F(GateE2eTest, GarbageAnswerIsReaped) {
  ExpectReaped("garbage", gate::ReapCause::kMalformed, absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace forkd::vmm::testing
