// The agent server end to end over a unix socket, driven by the real client,
// with the random device, clock, generation file and NIC injected.
#include "agent/server.h"

#include <fcntl.h>
#include <linux/random.h>
#include <sys/stat.h>

#include <cerrno>
#include <vector>

#include "agent/client.h"
#include "agent/tests/test_util.h"
#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

using testing::RunningServer;
using testing::Soon;
using testing::TempDir;
using Outcome = NotifyForkedResult::Outcome;

constexpr int64_t kGuestNow = 1'700'000'000'000'000'000;
constexpr int64_t kMs = 1'000'000;

class RecordingNet : public NetConfigurator {
 public:
  absl::Status Apply(const NetworkConfig& config) override {
    applied.push_back(config);
    return result;
  }
  std::vector<NetworkConfig> applied;
  absl::Status result = absl::OkStatus();
};

class ServerTest : public ::testing::Test {
 protected:
  ServerTest() {
    // A regular file: RNDADDENTROPY on it fails, which is the point of most
    // tests here (the successful credit needs root: reseed_root_test.cc).
    testing::WriteString(random_file_, "");
  }

  AgentOptions Options() {
    AgentOptions o;
    o.random_device = random_file_;
    o.generation_file = dir_.Path("run/forkd/generation");
    o.clock = {.now_ns = [] { return kGuestNow; },
               .set_ns =
                   [this](int64_t ns) {
                     clock_set_.push_back(ns);
                     return absl::OkStatus();
                   }};
    o.net = net_;
    return o;
  }

  NotifyForkedArgs Args(uint64_t generation) {
    return {.generation = generation,
            .host_wall_clock_ns = kGuestNow,
            .entropy = std::string(32, 'e'),
            .network = std::nullopt};
  }

  TempDir dir_;
  std::string random_file_ = dir_.Path("random");
  std::vector<int64_t> clock_set_;
  std::shared_ptr<RecordingNet> net_ = std::make_shared<RecordingNet>();
};

TEST_F(ServerTest, PingAnswersVersions) {
  RunningServer server(Options());
  auto client = server.Client();
  auto pong = client.Ping(Soon());
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->protocol_version(), kProtocolVersion);
  EXPECT_EQ(pong->agent_version(), kAgentVersion);
}

TEST_F(ServerTest, NotifyForkedIsNotReseededWhenTheIoctlFails) {
  RunningServer server(Options());
  auto client = server.Client();
  auto r = client.NotifyForked(Args(7), Soon());
  EXPECT_EQ(r.outcome, Outcome::kNotReseeded) << OutcomeName(r.outcome) << ": " << r.detail;
  EXPECT_NE(r.detail.find("RNDADDENTROPY"), std::string::npos) << r.detail;
  ASSERT_TRUE(r.response.has_value());
  EXPECT_FALSE(r.response->reseeded());
  // An uncredited write is not a fallback: the "device" received nothing.
  EXPECT_EQ(testing::ReadAll(random_file_), "");
}

TEST_F(ServerTest, NotifyForkedIsReseededOnlyWhenBothIoctlsSucceed) {
  for (const bool reseed_fails : {false, true}) {
    SCOPED_TRACE(reseed_fails ? "RNDRESEEDCRNG fails" : "both succeed");
    std::vector<unsigned long> calls;
    AgentOptions options = Options();
    options.random_ioctl = [&calls, reseed_fails](int, unsigned long request, void*) {
      calls.push_back(request);
      if (reseed_fails && request == RNDRESEEDCRNG) {
        errno = EPERM;
        return -1;
      }
      return 0;
    };
    RunningServer server(std::move(options));
    auto client = server.Client();
    auto r = client.NotifyForked(Args(7), Soon());
    EXPECT_EQ(calls, (std::vector<unsigned long>{RNDADDENTROPY, RNDRESEEDCRNG}));
    ASSERT_TRUE(r.response.has_value()) << r.detail;
    EXPECT_EQ(r.response->reseeded(), !reseed_fails);
    if (reseed_fails) {
      EXPECT_EQ(r.outcome, Outcome::kNotReseeded);
      EXPECT_NE(r.detail.find("RNDRESEEDCRNG"), std::string::npos) << r.detail;
    } else {
      EXPECT_EQ(r.outcome, Outcome::kReseeded) << r.detail;
    }
  }
}

TEST_F(ServerTest, NotifyForkedRefusesShortEntropy) {
  RunningServer server(Options());
  auto client = server.Client();
  auto args = Args(1);
  args.entropy = std::string(31, 'e');
  auto r = client.NotifyForked(args, Soon());
  EXPECT_EQ(r.outcome, Outcome::kNotReseeded);
  EXPECT_NE(r.detail.find("at least 32"), std::string::npos) << r.detail;
}

TEST_F(ServerTest, NotifyForkedWritesTheGenerationAndEchoesIt) {
  RunningServer server(Options());
  auto client = server.Client();
  auto r = client.NotifyForked(Args(42), Soon());
  ASSERT_TRUE(r.response.has_value()) << r.detail;
  EXPECT_EQ(r.response->generation(), 42u);
  EXPECT_EQ(r.response->generation_error(), "");
  EXPECT_EQ(testing::ReadAll(dir_.Path("run/forkd/generation")), "42\n");
  // A second notify on the same connection replaces it.
  r = client.NotifyForked(Args(43), Soon());
  ASSERT_TRUE(r.response.has_value()) << r.detail;
  EXPECT_EQ(testing::ReadAll(dir_.Path("run/forkd/generation")), "43\n");
}

TEST_F(ServerTest, NotifyForkedStepsTheClockOnlyBeyond500ms) {
  RunningServer server(Options());
  auto client = server.Client();
  auto args = Args(1);
  args.host_wall_clock_ns = kGuestNow + 499 * kMs;
  auto r = client.NotifyForked(args, Soon());
  ASSERT_TRUE(r.response.has_value()) << r.detail;
  EXPECT_EQ(r.response->clock_step_ns(), 0);
  EXPECT_TRUE(clock_set_.empty());

  args.host_wall_clock_ns = kGuestNow + 2000 * kMs;
  r = client.NotifyForked(args, Soon());
  ASSERT_TRUE(r.response.has_value()) << r.detail;
  EXPECT_EQ(r.response->clock_step_ns(), 2000 * kMs);
  EXPECT_EQ(clock_set_, std::vector<int64_t>{kGuestNow + 2000 * kMs});
  EXPECT_EQ(r.response->clock_error(), "");
}

TEST_F(ServerTest, NotifyForkedAppliesTheNetworkAndReportsItsErrors) {
  RunningServer server(Options());
  auto client = server.Client();
  auto args = Args(1);
  v1::Network net;
  net.set_ipv4_cidr("10.0.0.2/30");
  net.set_ipv4_gateway("10.0.0.1");
  args.network = net;
  auto r = client.NotifyForked(args, Soon());
  ASSERT_TRUE(r.response.has_value()) << r.detail;
  EXPECT_EQ(r.response->network_error(), "");
  ASSERT_EQ(net_->applied.size(), 1u);
  EXPECT_EQ(net_->applied[0].ipv4->prefix_len, 30);

  net_->result = absl::InternalError("netlink said no");
  r = client.NotifyForked(args, Soon());
  ASSERT_TRUE(r.response.has_value()) << r.detail;
  EXPECT_EQ(r.response->network_error(), "netlink said no");

  net.set_ipv4_cidr("bogus");  // refused before the NIC is touched
  args.network = net;
  r = client.NotifyForked(args, Soon());
  ASSERT_TRUE(r.response.has_value()) << r.detail;
  EXPECT_NE(r.response->network_error(), "");
  EXPECT_EQ(net_->applied.size(), 2u);
}

TEST_F(ServerTest, NotifyForkedWithoutANetConfiguratorSaysSo) {
  auto options = Options();
  options.net = nullptr;
  RunningServer server(std::move(options));
  auto client = server.Client();
  auto args = Args(1);
  args.network = v1::Network();
  auto r = client.NotifyForked(args, Soon());
  ASSERT_TRUE(r.response.has_value()) << r.detail;
  EXPECT_NE(r.response->network_error(), "");
}

TEST_F(ServerTest, ExecAndFilesThroughTheClient) {
  RunningServer server(Options());
  auto client = server.Client();
  v1::ExecRequest exec;
  exec.add_argv("echo");
  exec.add_argv("hi");
  auto e = client.Exec(exec, Soon());
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->stdout(), "hi\n");
  EXPECT_EQ(e->exit_code(), 0);

  v1::WriteFileRequest w;
  w.set_path(dir_.Path("file"));
  w.set_data("contents");
  auto wr = client.WriteFile(w, Soon());
  ASSERT_TRUE(wr.ok()) << wr.status();
  EXPECT_EQ(wr->error(), "");
  v1::ReadFileRequest r;
  r.set_path(w.path());
  auto rr = client.ReadFile(r, Soon());
  ASSERT_TRUE(rr.ok()) << rr.status();
  EXPECT_EQ(rr->data(), "contents");
}

// --- protocol abuse: each gives an error or a close, and the server goes on ---

void ExpectServerStillServes(const RunningServer& server) {
  auto client = server.Client();
  auto pong = client.Ping(Soon());
  EXPECT_TRUE(pong.ok()) << pong.status();
}

TEST_F(ServerTest, OversizeFrameGetsFrameTooLargeThenClose) {
  RunningServer server(Options());
  UniqueFd conn = server.Connect();
  ASSERT_TRUE(WriteAll(conn.get(), testing::FrameHeader(kMaxFrameBytes + 1), Soon()).ok());
  v1::Response resp = testing::ReadResponse(conn.get());
  ASSERT_TRUE(resp.has_error());
  EXPECT_EQ(resp.error().code(), v1::ErrorResponse::FRAME_TOO_LARGE);
  auto next = ReadFrame(conn.get(), Soon(), kMaxFrameBytes);
  EXPECT_EQ(next.status().code(), absl::StatusCode::kUnavailable) << next.status();
  ExpectServerStillServes(server);
}

TEST_F(ServerTest, UnknownRequestKindGetsAnErrorAndTheConnectionGoesOn) {
  RunningServer server(Options());
  UniqueFd conn = server.Connect();
  v1::Request req;
  req.set_id(9);  // no kind set: what an agent sees from a newer host
  testing::SendRequest(conn.get(), req);
  v1::Response resp = testing::ReadResponse(conn.get());
  EXPECT_EQ(resp.id(), 9u);
  ASSERT_TRUE(resp.has_error());
  EXPECT_EQ(resp.error().code(), v1::ErrorResponse::UNKNOWN_REQUEST);

  // A field number this agent has never heard of, and no known kind.
  ASSERT_TRUE(WriteFrame(conn.get(), std::string("\xa2\x06\x00", 3), Soon(), kMaxFrameBytes).ok());
  resp = testing::ReadResponse(conn.get());
  ASSERT_TRUE(resp.has_error());
  EXPECT_EQ(resp.error().code(), v1::ErrorResponse::UNKNOWN_REQUEST);

  req.mutable_ping();
  testing::SendRequest(conn.get(), req);
  EXPECT_TRUE(testing::ReadResponse(conn.get()).has_ping());
}

TEST_F(ServerTest, GarbageFrameGetsMalformedAndTheConnectionGoesOn) {
  RunningServer server(Options());
  UniqueFd conn = server.Connect();
  // 0xff is an invalid tag (field 31, wire type 7): not a protobuf message.
  ASSERT_TRUE(WriteFrame(conn.get(), std::string(16, '\xff'), Soon(), kMaxFrameBytes).ok());
  v1::Response resp = testing::ReadResponse(conn.get());
  ASSERT_TRUE(resp.has_error());
  EXPECT_EQ(resp.error().code(), v1::ErrorResponse::MALFORMED);

  v1::Request req;
  req.set_id(1);
  req.mutable_ping();
  testing::SendRequest(conn.get(), req);
  EXPECT_TRUE(testing::ReadResponse(conn.get()).has_ping());
}

TEST_F(ServerTest, TruncatedFrameClosesOnlyThatConnection) {
  RunningServer server(Options());
  {
    UniqueFd conn = server.Connect();
    ASSERT_TRUE(WriteAll(conn.get(), testing::FrameHeader(100) + "ten bytes.", Soon()).ok());
    ASSERT_EQ(::shutdown(conn.get(), SHUT_WR), 0);
    auto next = ReadFrame(conn.get(), Soon(), kMaxFrameBytes);
    EXPECT_EQ(next.status().code(), absl::StatusCode::kUnavailable) << next.status();
  }
  ExpectServerStillServes(server);
}

TEST_F(ServerTest, StalledFrameIsDroppedAfterTheFrameTimeout) {
  auto options = Options();
  options.frame_timeout = std::chrono::milliseconds(100);
  RunningServer server(std::move(options));
  UniqueFd conn = server.Connect();
  ASSERT_TRUE(WriteAll(conn.get(), testing::FrameHeader(100) + "stall", Soon()).ok());
  // The server gives up on the frame and hangs up; Soon() is only a hang guard.
  auto next = ReadFrame(conn.get(), Soon(), kMaxFrameBytes);
  EXPECT_EQ(next.status().code(), absl::StatusCode::kUnavailable) << next.status();
  ExpectServerStillServes(server);
}

TEST_F(ServerTest, ALongExecDoesNotDelayNotifyOnAnotherConnection) {
  RunningServer server(Options());
  const std::string fifo = dir_.Path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  UniqueFd busy = server.Connect();
  v1::Request req;
  req.set_id(1);
  // Runs until this test writes to the fifo, which it does only after the
  // notify on the other connection was answered.
  req.mutable_exec()->add_argv("sh");
  req.mutable_exec()->add_argv("-c");
  req.mutable_exec()->add_argv("read line < " + fifo + "; echo \"$line\"");
  req.mutable_exec()->set_timeout_ms(20'000);  // hang guard
  testing::SendRequest(busy.get(), req);

  auto client = server.Client();
  auto r = client.NotifyForked(Args(5), Soon());
  EXPECT_TRUE(r.response.has_value()) << OutcomeName(r.outcome) << ": " << r.detail;

  {
    UniqueFd w(::open(fifo.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(w.valid()) << std::strerror(errno);
    ASSERT_EQ(::write(w.get(), "go\n", 3), 3);
  }
  v1::Response resp = testing::ReadResponse(busy.get());
  ASSERT_TRUE(resp.has_exec());
  EXPECT_EQ(resp.exec().stdout(), "go\n");
  EXPECT_FALSE(resp.exec().timed_out());
}

}  // namespace
}  // namespace forkd::agent
