// How AgentClient classifies what comes back, against scripted fake agents on
// a socketpair. This is the input to the host's reseed gate: only kReseeded
// may let a fork be served.
#include "agent/client.h"

#include <functional>
#include <thread>

#include "agent/tests/test_util.h"
#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

using testing::Soon;
using Outcome = NotifyForkedResult::Outcome;

// Runs `script` on the agent end of a socketpair; the test holds the client.
class FakeAgent {
 public:
  explicit FakeAgent(std::function<void(int fd)> script) {
    auto [client_end, agent_end] = testing::SocketPair();
    client_fd_ = std::move(client_end);
    agent_fd_ = std::move(agent_end);
    thread_ = std::thread([this, script = std::move(script)] { script(agent_fd_.get()); });
  }
  ~FakeAgent() {
    client_fd_.reset();  // unblocks a script waiting for more requests
    thread_.join();
  }
  // Only valid once: the client owns the fd from then on.
  AgentClient Client() { return AgentClient(std::move(client_fd_)); }

 private:
  UniqueFd client_fd_;
  UniqueFd agent_fd_;
  std::thread thread_;
};

v1::Request ReadRequest(int fd) {
  auto frame = ReadFrame(fd, Soon(), kMaxFrameBytes);
  v1::Request req;
  if (frame.ok()) {
    EXPECT_TRUE(req.ParseFromString(*frame));
  }
  return req;
}

void Answer(int fd, const v1::Response& resp) {
  std::string bytes;
  ASSERT_TRUE(resp.SerializeToString(&bytes));
  // The client may already have hung up (timeout tests): that is fine here.
  (void)WriteFrame(fd, bytes, Soon(), kMaxFrameBytes);
}

v1::Response NotifyAnswer(const v1::Request& req, bool reseeded) {
  v1::Response resp;
  resp.set_id(req.id());
  resp.mutable_notify_forked()->set_reseeded(reseeded);
  resp.mutable_notify_forked()->set_generation(req.notify_forked().generation());
  if (!reseeded) resp.mutable_notify_forked()->set_error("ioctl RNDADDENTROPY: EPERM");
  return resp;
}

NotifyForkedArgs Args() { return {.generation = 3}; }

TEST(ClientTest, ReseededWhenTheAgentSaysSo) {
  v1::Request seen;
  {
    FakeAgent agent([&](int fd) {
      seen = ReadRequest(fd);
      Answer(fd, NotifyAnswer(seen, true));
    });
    auto client = agent.Client();
    auto r = client.NotifyForked(Args(), Soon());
    EXPECT_EQ(r.outcome, Outcome::kReseeded) << r.detail;
    EXPECT_TRUE(r.reseeded());
  }
  // Defaults filled in by the client: fresh entropy and the host clock.
  EXPECT_EQ(seen.notify_forked().entropy().size(), kMinEntropyBytes);
  EXPECT_NE(seen.notify_forked().entropy(), std::string(kMinEntropyBytes, '\0'));
  EXPECT_GT(seen.notify_forked().host_wall_clock_ns(), 0);
}

TEST(ClientTest, NotReseededCarriesTheAgentsReason) {
  FakeAgent agent([](int fd) { Answer(fd, NotifyAnswer(ReadRequest(fd), false)); });
  auto client = agent.Client();
  auto r = client.NotifyForked(Args(), Soon());
  EXPECT_EQ(r.outcome, Outcome::kNotReseeded);
  EXPECT_EQ(r.detail, "ioctl RNDADDENTROPY: EPERM");
  ASSERT_TRUE(r.response.has_value());
}

TEST(ClientTest, AnErrorResponseIsNotReseeded) {
  FakeAgent agent([](int fd) {
    v1::Response resp;
    resp.set_id(ReadRequest(fd).id());
    resp.mutable_error()->set_code(v1::ErrorResponse::UNKNOWN_REQUEST);
    Answer(fd, resp);
  });
  auto client = agent.Client();
  EXPECT_EQ(client.NotifyForked(Args(), Soon()).outcome, Outcome::kNotReseeded);
}

TEST(ClientTest, NoAnswerIsATimeout) {
  FakeAgent agent([](int fd) {
    (void)ReadRequest(fd);
    // Never answers; waits for the client to hang up.
    (void)ReadFrame(fd, Soon(), kMaxFrameBytes);
  });
  auto client = agent.Client();
  auto r = client.NotifyForked(Args(), DeadlineIn(std::chrono::milliseconds(100)));
  EXPECT_EQ(r.outcome, Outcome::kTimeout) << r.detail;
}

TEST(ClientTest, ALateAnswerIsATimeoutAndIsNeverTakenForTheNextAnswer) {
  FakeAgent agent([](int fd) {
    const v1::Request req = ReadRequest(fd);
    // Ten times the client's deadline: unambiguously late.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    Answer(fd, NotifyAnswer(req, true));
  });
  auto client = agent.Client();
  auto r = client.NotifyForked(Args(), DeadlineIn(std::chrono::milliseconds(100)));
  EXPECT_EQ(r.outcome, Outcome::kTimeout) << r.detail;
  // The reseeded=true that arrives afterwards must not satisfy a later call.
  r = client.NotifyForked(Args(), Soon());
  EXPECT_EQ(r.outcome, Outcome::kClosed) << r.detail;
  EXPECT_FALSE(r.reseeded());
}

TEST(ClientTest, GarbageIsMalformed) {
  FakeAgent agent([](int fd) {
    (void)ReadRequest(fd);
    (void)WriteFrame(fd, std::string(16, '\xff'), Soon(), kMaxFrameBytes);
  });
  auto client = agent.Client();
  auto r = client.NotifyForked(Args(), Soon());
  EXPECT_EQ(r.outcome, Outcome::kMalformed) << r.detail;
}

TEST(ClientTest, OversizeAnswerIsMalformed) {
  FakeAgent agent([](int fd) {
    (void)ReadRequest(fd);
    (void)WriteAll(fd, testing::FrameHeader(kMaxFrameBytes + 1), Soon());
  });
  auto client = agent.Client();
  auto r = client.NotifyForked(Args(), Soon());
  EXPECT_EQ(r.outcome, Outcome::kMalformed) << r.detail;
}

TEST(ClientTest, WrongKindWrongIdAndWrongGenerationAreMalformed) {
  {
    FakeAgent agent([](int fd) {
      v1::Response resp;
      resp.set_id(ReadRequest(fd).id());
      resp.mutable_ping();
      Answer(fd, resp);
    });
    auto client = agent.Client();
    EXPECT_EQ(client.NotifyForked(Args(), Soon()).outcome, Outcome::kMalformed);
  }
  {
    FakeAgent agent([](int fd) {
      v1::Request req = ReadRequest(fd);
      auto resp = NotifyAnswer(req, true);
      resp.set_id(req.id() + 1);
      Answer(fd, resp);
    });
    auto client = agent.Client();
    EXPECT_EQ(client.NotifyForked(Args(), Soon()).outcome, Outcome::kMalformed);
  }
  {
    FakeAgent agent([](int fd) {
      auto resp = NotifyAnswer(ReadRequest(fd), true);
      resp.mutable_notify_forked()->set_generation(999);
      Answer(fd, resp);
    });
    auto client = agent.Client();
    auto r = client.NotifyForked(Args(), Soon());
    EXPECT_EQ(r.outcome, Outcome::kWrongGeneration) << r.detail;
    EXPECT_FALSE(r.reseeded());
  }
}

TEST(ClientTest, HangUpIsClosed) {
  FakeAgent agent([](int fd) {
    (void)ReadRequest(fd);
    (void)::shutdown(fd, SHUT_RDWR);
  });
  auto client = agent.Client();
  auto r = client.NotifyForked(Args(), Soon());
  EXPECT_EQ(r.outcome, Outcome::kClosed) << r.detail;
}

TEST(ClientTest, HalfAnAnswerThenHangUpIsClosed) {
  FakeAgent agent([](int fd) {
    (void)ReadRequest(fd);
    (void)WriteAll(fd, testing::FrameHeader(50) + "half", Soon());
    (void)::shutdown(fd, SHUT_RDWR);
  });
  auto client = agent.Client();
  auto r = client.NotifyForked(Args(), Soon());
  EXPECT_EQ(r.outcome, Outcome::kClosed) << r.detail;
  EXPECT_NE(r.detail.find("truncated"), std::string::npos) << r.detail;
}

}  // namespace
}  // namespace forkd::agent
