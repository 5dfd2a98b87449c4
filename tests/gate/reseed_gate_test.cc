// Tier 1 (root + netns): the reseed gate against a stand-in VMM process whose
// agent behaves well or badly. A fork that does not prove its reseed in time is
// reaped: process gone, tap and nftables objects gone, files gone.
#include "forkd/gate/reseed_gate.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "agent/framing.h"
#include "agent/protocol.h"
#include "agent/server.h"
#include "gtest/gtest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::gate {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr auto kDeadline = 500ms;

enum class Agent {
  kHonest,
  kRefuses,
  kSilent,
  kLate,
  kGarbage,
  kHangsUp,
  kNetworkFails,     // reseeds, but applying the fork's network fails
  kGenerationFails,  // reseeds, but cannot record the generation
  kWrongGeneration,  // reseeds, but echoes another generation
};

// A NIC that accepts every configuration (the honest agent with a network).
class AcceptingNet : public agent::NetConfigurator {
 public:
  absl::Status Apply(const agent::NetworkConfig&) override { return absl::OkStatus(); }
};

// A NIC whose configuration fails, as when the fork keeps the template's MAC.
class FailingNet : public agent::NetConfigurator {
 public:
  absl::Status Apply(const agent::NetworkConfig&) override {
    return absl::UnavailableError("eth0: RTM_NEWADDR: address in use");
  }
};

agent::v1::Network ForkNetwork() {
  agent::v1::Network net;
  net.set_ipv4_cidr("10.200.0.2/30");
  net.set_ipv4_gateway("10.200.0.1");
  return net;
}

// Runs in the forked child: answers (or not) one NotifyForked, then idles
// like a VMM until it is killed.
[[noreturn]] void RunFakeVmm(int fd, Agent behaviour, const fs::path& dir) {
  agent::AgentOptions options;
  options.random_device =
      behaviour == Agent::kRefuses ? (dir / "not-a-random-device").string() : "/dev/random";
  options.generation_file = (dir / "generation").string();
  // A generation file under a regular file cannot be created.
  if (behaviour == Agent::kGenerationFails) {
    options.generation_file = (dir / "not-a-random-device" / "generation").string();
  }
  options.net = behaviour == Agent::kNetworkFails
                    ? std::shared_ptr<agent::NetConfigurator>(std::make_shared<FailingNet>())
                    : std::make_shared<AcceptingNet>();
  options.clock = {[] { return int64_t{1}; }, [](int64_t) { return absl::OkStatus(); }};
  options.log = [](std::string_view) {};
  auto frame = agent::ReadFrame(fd, agent::DeadlineIn(10s), agent::kMaxFrameBytes);
  if (!frame.ok()) _exit(3);
  if (behaviour == Agent::kHangsUp) _exit(0);
  if (behaviour == Agent::kSilent) {
    for (;;) pause();
  }
  if (behaviour == Agent::kLate) std::this_thread::sleep_for(kDeadline + 700ms);
  if (behaviour == Agent::kGarbage) {
    (void)agent::WriteFrame(fd, "\x08\x01\xff\xff\xff garbage", agent::DeadlineIn(1s),
                            agent::kMaxFrameBytes);
  } else {
    agent::v1::Request request;
    if (!request.ParseFromString(*frame)) _exit(4);
    agent::AgentServer server(options);
    agent::v1::Response response = server.Handle(request);
    if (behaviour == Agent::kWrongGeneration) {
      response.mutable_notify_forked()->set_generation(request.notify_forked().generation() + 1);
    }
    (void)agent::WriteFrame(fd, response.SerializeAsString(), agent::DeadlineIn(1s),
                            agent::kMaxFrameBytes);
  }
  for (;;) pause();
}

class ReseedGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ns = netfilter::CreateNetns();
    ASSERT_OK(ns.status());
    netns_ = std::move(*ns);
    auto nft = netfilter::Nftables::Open(netns_.get());
    ASSERT_OK(nft.status());
    nft_.emplace(std::move(*nft));
    ASSERT_OK(nft_->EnsureSkeleton({}));
    dir_ = fs::temp_directory_path() / ("forkd-gate-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "not-a-random-device") << "regular file";
  }
  void TearDown() override {
    // Only a child not yet waited for may be killed by pid: once reaped, the
    // pid may already belong to some other process.
    if (pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A fork with a live VMM process, a tap with its chains, and files.
  ForkResources StartFork(Agent behaviour, UniqueFd& host_end) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd parent(sv[0]);
    UniqueFd child(sv[1]);
    const fs::path fork_dir = dir_ / "fork1";
    fs::create_directories(fork_dir / "sockets");
    std::ofstream(fork_dir / "memory.overlay") << "dirty pages";
    pid_ = fork();
    if (pid_ == 0) RunFakeVmm(child.get(), behaviour, dir_);
    child.reset();
    host_end = std::move(parent);

    ForkResources fork;
    fork.fork_id = "fork1";
    auto pidfd = OpenPidfd(pid_);
    EXPECT_TRUE(pidfd.ok()) << pidfd.status();
    if (pidfd.ok()) fork.vmm_pidfd = std::move(*pidfd);
    auto tap = netfilter::CreateTap(netns_.get(), {.name = "sbt1", .persistent = true});
    EXPECT_TRUE(tap.ok()) << tap.status();
    netfilter::TapPolicy policy;
    policy.tap = "sbt1";
    policy.guest_v4 = *netfilter::IpAddress::Parse("10.200.0.2");
    EXPECT_TRUE(nft_->AddTap(policy).ok());
    fork.netns = netfilter::OpenNetns("/proc/self/fd/" + std::to_string(netns_.get())).value();
    fork.tap = "sbt1";
    fork.paths = {fork_dir};
    return fork;
  }

  bool TapInstalled() {
    auto taps = nft_->ListTaps();
    return taps.ok() && !taps->empty();
  }
  bool LinkExists() { return netfilter::RtNetlink::Open(netns_.get())->LinkExists("sbt1"); }
  bool ProcessGone() {
    // Reaped by the gate: the pid is no longer ours to wait for.
    return waitpid(pid_, nullptr, WNOHANG) == -1 && errno == ECHILD;
  }

  void ExpectReaped(Agent behaviour, ReapCause cause, absl::StatusCode code,
                    const std::optional<agent::v1::Network>& network = std::nullopt) {
    UniqueFd conn;
    ForkResources fork = StartFork(behaviour, conn);
    ASSERT_TRUE(TapInstalled());
    absl::Status s = AdmitFork(fork, std::move(conn), 7, network, {.deadline = kDeadline});
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_EQ(ReapCauseOf(s), cause) << s;
    EXPECT_NE(std::string(s.message()).find("fork fork1 reaped"), std::string::npos) << s;
    EXPECT_TRUE(ProcessGone()) << "VMM process survived the reap";
    EXPECT_FALSE(TapInstalled()) << "nftables objects survived the reap";
    EXPECT_FALSE(LinkExists()) << "tap survived the reap";
    EXPECT_FALSE(fs::exists(dir_ / "fork1")) << "files survived the reap";
    EXPECT_FALSE(fork.vmm_pidfd.valid());
    EXPECT_TRUE(fork.paths.empty());
  }

  UniqueFd netns_;
  std::optional<netfilter::Nftables> nft_;
  fs::path dir_;
  pid_t pid_ = -1;
};

TEST_F(ReseedGateTest, ReseededForkIsAdmittedAndKeepsEverything) {
  UniqueFd conn;
  ForkResources fork = StartFork(Agent::kHonest, conn);
  ASSERT_OK(AdmitFork(fork, std::move(conn), 7, std::nullopt, {.deadline = 5s}));
  EXPECT_EQ(kill(pid_, 0), 0) << "an admitted fork's VMM must keep running";
  EXPECT_TRUE(TapInstalled());
  EXPECT_TRUE(LinkExists());
  EXPECT_TRUE(fs::exists(dir_ / "fork1" / "memory.overlay"));
  std::ifstream generation(dir_ / "generation");
  std::string g;
  generation >> g;
  EXPECT_EQ(g, "7");
  ASSERT_OK(Reap(fork));
  EXPECT_TRUE(ProcessGone());
  EXPECT_FALSE(TapInstalled());
}

// The positive control for the network check below: the same request with a
// NIC that accepts it admits the fork.
TEST_F(ReseedGateTest, ForkThatTookItsNetworkIsAdmitted) {
  UniqueFd conn;
  ForkResources fork = StartFork(Agent::kHonest, conn);
  ASSERT_OK(AdmitFork(fork, std::move(conn), 7, ForkNetwork(), {.deadline = 5s}));
  EXPECT_EQ(kill(pid_, 0), 0);
  ASSERT_OK(Reap(fork));
}

TEST_F(ReseedGateTest, ReseededForkWithANetworkErrorIsReaped) {
  ExpectReaped(Agent::kNetworkFails, ReapCause::kNetworkError,
               absl::StatusCode::kFailedPrecondition, ForkNetwork());
}

TEST_F(ReseedGateTest, ReseededForkWithAGenerationErrorIsReaped) {
  ExpectReaped(Agent::kGenerationFails, ReapCause::kGenerationError,
               absl::StatusCode::kFailedPrecondition);
}

TEST_F(ReseedGateTest, ReseededForkEchoingAnotherGenerationIsReaped) {
  ExpectReaped(Agent::kWrongGeneration, ReapCause::kWrongGeneration, absl::StatusCode::kDataLoss);
}

TEST_F(ReseedGateTest, AgentThatCannotCreditEntropyIsReaped) {
  ExpectReaped(Agent::kRefuses, ReapCause::kNotReseeded, absl::StatusCode::kFailedPrecondition);
}

TEST_F(ReseedGateTest, SilentAgentIsReaped) {
  ExpectReaped(Agent::kSilent, ReapCause::kNoAnswer, absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ReseedGateTest, LateAnswerIsReaped) {
  ExpectReaped(Agent::kLate, ReapCause::kNoAnswer, absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ReseedGateTest, GarbageAnswerIsReaped) {
  ExpectReaped(Agent::kGarbage, ReapCause::kMalformed, absl::StatusCode::kDataLoss);
}

TEST_F(ReseedGateTest, HangUpIsReaped) {
  ExpectReaped(Agent::kHangsUp, ReapCause::kClosed, absl::StatusCode::kUnavailable);
}

TEST_F(ReseedGateTest, NoConnectionIsReaped) {
  UniqueFd conn;
  ForkResources fork = StartFork(Agent::kSilent, conn);
  absl::Status s = AdmitFork(fork, absl::UnavailableError("vsock CONNECT 1024: refused"), 7,
                             std::nullopt, {.deadline = kDeadline});
  EXPECT_EQ(ReapCauseOf(s), ReapCause::kConnectFailed) << s;
  EXPECT_TRUE(ProcessGone());
  EXPECT_FALSE(TapInstalled());
}

TEST_F(ReseedGateTest, ReapingTwiceIsHarmless) {
  UniqueFd conn;
  ForkResources fork = StartFork(Agent::kSilent, conn);
  ASSERT_OK(Reap(fork));
  ASSERT_OK(Reap(fork));  // everything already gone: still OK
}

}  // namespace
}  // namespace forkd::gate
