#include "agent/vsock_connect.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "agent/client.h"
#include "agent/tests/test_util.h"
#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

using testing::Soon;

// A fake VMM multiplexer: accepts one connection and runs `script` on it.
class FakeMux {
 public:
  explicit FakeMux(std::function<void(int fd)> script) : path_(dir_.Path("vsock.sock")) {
    listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    EXPECT_EQ(::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_.get(), 1), 0);
    thread_ = std::thread([this, script = std::move(script)] {
      UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (conn) script(conn.get());
    });
  }
  ~FakeMux() { thread_.join(); }
  const std::string& path() const { return path_; }

 private:
  testing::TempDir dir_;
  std::string path_;
  UniqueFd listen_;
  std::thread thread_;
};

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (::recv(fd, &c, 1, 0) == 1 && c != '\n') line.push_back(c);
  return line;
}

TEST(VsockConnectTest, HandshakesThenCarriesTheAgentProtocol) {
  std::string seen;
  FakeMux mux([&](int fd) {
    seen = ReadLine(fd);
    ASSERT_TRUE(WriteAll(fd, "OK 1073741824\n", Soon()).ok());
    // Act as the guest agent behind the multiplexer.
    auto frame = ReadFrame(fd, Soon(), kMaxFrameBytes);
    ASSERT_TRUE(frame.ok()) << frame.status();
    v1::Request req;
    ASSERT_TRUE(req.ParseFromString(*frame));
    v1::Response resp;
    resp.set_id(req.id());
    resp.mutable_ping()->set_protocol_version(kProtocolVersion);
    std::string bytes;
    ASSERT_TRUE(resp.SerializeToString(&bytes));
    ASSERT_TRUE(WriteFrame(fd, bytes, Soon(), kMaxFrameBytes).ok());
  });
  auto fd = ConnectVsockMux(mux.path(), 1024, Soon());
  ASSERT_TRUE(fd.ok()) << fd.status();
  AgentClient client(*std::move(fd));
  auto pong = client.Ping(Soon());
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->protocol_version(), kProtocolVersion);
  EXPECT_EQ(seen, "CONNECT 1024");
}

TEST(VsockConnectTest, DoesNotConsumeBytesAfterTheOkLine) {
  FakeMux mux([](int fd) {
    (void)ReadLine(fd);
    // The OK line and the guest's first frame arrive in one segment.
    ASSERT_TRUE(WriteAll(fd, "OK 5\n" + testing::FrameHeader(3) + "abc", Soon()).ok());
  });
  auto fd = ConnectVsockMux(mux.path(), 1024, Soon());
  ASSERT_TRUE(fd.ok()) << fd.status();
  auto frame = ReadFrame(fd->get(), Soon(), kMaxFrameBytes);
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(*frame, "abc");
}

TEST(VsockConnectTest, ClassifiesFailures) {
  {
    FakeMux mux([](int fd) { (void)ReadLine(fd); });  // hangs up: no guest listener
    EXPECT_EQ(ConnectVsockMux(mux.path(), 1024, Soon()).status().code(),
              absl::StatusCode::kUnavailable);
  }
  {
    FakeMux mux([](int fd) {
      (void)ReadLine(fd);
      (void)WriteAll(fd, "FAILURE\n", Soon());
    });
    EXPECT_EQ(ConnectVsockMux(mux.path(), 1024, Soon()).status().code(),
              absl::StatusCode::kDataLoss);
  }
  {
    FakeMux mux([](int fd) {
      (void)ReadLine(fd);
      (void)ReadLine(fd);  // never answers; returns when the client hangs up
    });
    EXPECT_EQ(ConnectVsockMux(mux.path(), 1024, DeadlineIn(std::chrono::milliseconds(100)))
                  .status()
                  .code(),
              absl::StatusCode::kDeadlineExceeded);
  }
  testing::TempDir dir;
  EXPECT_EQ(ConnectVsockMux(dir.Path("missing.sock"), 1024, Soon()).status().code(),
            absl::StatusCode::kUnavailable);
}

// Regression: the unix connect used to block with no deadline, so a
// multiplexer whose listen backlog was full blocked the caller forever.
TEST(VsockConnectTest, FullBacklogHonoursTheDeadline) {
  testing::TempDir dir;
  const std::string path = dir.Path("busy.sock");
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener.get(), 0), 0);  // never accepts
  // Fill the backlog: non-blocking connects until one would block.
  std::vector<UniqueFd> queued;
  while (queued.size() < 64) {
    UniqueFd c(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (::connect(c.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      break;
    }
    queued.push_back(std::move(c));
  }
  ASSERT_LT(queued.size(), 64u) << "the backlog never filled";
  auto result = std::async(std::launch::async, [&] {
    return ConnectVsockMux(path, 1024, DeadlineIn(std::chrono::milliseconds(200))).status();
  });
  if (result.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {  // hang guard
    ADD_FAILURE() << "ConnectVsockMux blocked past its deadline on a full backlog";
    std::_Exit(1);  // the blocked thread would keep the test from exiting
  }
  const absl::Status st = result.get();
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_NE(st.message().find("connect"), std::string::npos) << st;
}

}  // namespace
}  // namespace forkd::agent
