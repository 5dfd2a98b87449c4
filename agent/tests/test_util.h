// Shared fixtures for the agent tests: temp dirs, socket pairs, an AgentServer
// running on a unix socket in a thread, and raw frame helpers.
#pragma once

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include "agent/client.h"
#include "agent/framing.h"
#include "agent/protocol.h"
#include "agent/server.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"

namespace forkd::agent::testing {

// Hang guard for calls that are expected to succeed: generous, never asserted on.
inline Deadline Soon() { return DeadlineIn(std::chrono::seconds(20)); }

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "forkd-agent-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;  // best effort: a leftover temp dir is not a test failure
    std::filesystem::remove_all(path_, ec);
  }
  std::string Path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteString(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

inline std::pair<UniqueFd, UniqueFd> SocketPair() {
  int fds[2] = {-1, -1};
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0) << std::strerror(errno);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

inline UniqueFd ConnectUnix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << "connect " << path << ": " << std::strerror(errno);
  return fd;
}

// Header of a frame claiming `len` payload bytes.
inline std::string FrameHeader(uint32_t len) {
  return {static_cast<char>(len >> 24), static_cast<char>(len >> 16), static_cast<char>(len >> 8),
          static_cast<char>(len)};
}

// An AgentServer serving a unix socket on a background thread.
class RunningServer {
 public:
  explicit RunningServer(AgentOptions options) : path_(dir_.Path("agent.sock")) {
    listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    EXPECT_EQ(::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
        << std::strerror(errno);
    EXPECT_EQ(::listen(listen_.get(), 16), 0) << std::strerror(errno);
    if (!options.log) options.log = [](std::string_view) {};
    server_ = std::make_unique<AgentServer>(std::move(options));
    thread_ = std::thread([this] { serve_status_ = server_->Serve(listen_.get()); });
  }
  ~RunningServer() {
    server_->Stop();
    thread_.join();
    EXPECT_TRUE(serve_status_.ok()) << serve_status_;
  }

  UniqueFd Connect() const { return ConnectUnix(path_); }
  AgentClient Client() const { return AgentClient(Connect()); }

 private:
  TempDir dir_;
  std::string path_;
  UniqueFd listen_;
  std::unique_ptr<AgentServer> server_;
  absl::Status serve_status_;
  std::thread thread_;
};

// Reads one response frame from a raw connection.
inline v1::Response ReadResponse(int fd) {
  auto frame = ReadFrame(fd, Soon(), kMaxFrameBytes);
  EXPECT_TRUE(frame.ok()) << frame.status();
  v1::Response resp;
  if (frame.ok()) {
    EXPECT_TRUE(resp.ParseFromString(*frame));
  }
  return resp;
}

inline void SendRequest(int fd, const v1::Request& req) {
  std::string bytes;
  ASSERT_TRUE(req.SerializeToString(&bytes));
  ASSERT_TRUE(WriteFrame(fd, bytes, Soon(), kMaxFrameBytes).ok());
}

}  // namespace forkd::agent::testing
