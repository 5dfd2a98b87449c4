// The agent's request loop: accepts connections on a listening stream socket
// and serves each on its own thread, one request frame -> one response frame.
//
// A thread per connection because a long Exec on one connection must never
// delay a NotifyForked on another: after a restore the host's reseed gate has a
// deadline, and a fork whose agent is busy would be reaped.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "agent/clock.h"
#include "agent/netconfig.h"
#include "agent/proto/agent.pb.h"
#include "agent/reseed.h"
#include "common/unique_fd.h"

namespace forkd::agent {

struct AgentOptions {
  std::string random_device = "/dev/random";
  // The RNDADDENTROPY/RNDRESEEDCRNG calls (agent/reseed.h); empty: ioctl(2).
  RandomIoctl random_ioctl;
  std::string generation_file = "/run/forkd/generation";
  WallClock clock = SystemWallClock();
  // Null: NotifyForked with a network reports network_error "not configured".
  std::shared_ptr<NetConfigurator> net;
  // Once the first byte of a frame has arrived, the rest must follow within this.
  std::chrono::milliseconds frame_timeout{10'000};
  // A connection with no request for this long is closed.
  std::chrono::milliseconds idle_timeout{300'000};
  size_t max_connections = 64;
  // Where diagnostics go (never entropy). Default: stderr.
  std::function<void(std::string_view)> log;
};

class AgentServer {
 public:
  explicit AgentServer(AgentOptions options);
  ~AgentServer();  // Stop()s and joins every connection thread
  AgentServer(const AgentServer&) = delete;
  AgentServer& operator=(const AgentServer&) = delete;

  // Accepts and serves connections until Stop(). Returns an error only if the
  // listening socket fails; a bad connection never stops the server.
  absl::Status Serve(int listen_fd);

  // Makes Serve() return and closes open connections. Thread-safe.
  void Stop();

  // One request -> one response; exposed for direct unit tests.
  v1::Response Handle(const v1::Request& request);

 private:
  struct Connection {
    UniqueFd fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  void ServeConnection(int fd);
  v1::NotifyForkedResponse NotifyForked(const v1::NotifyForkedRequest& request);
  absl::Status WriteGeneration(uint64_t generation);
  void SendError(int fd, uint64_t id, v1::ErrorResponse::Code code, std::string_view message);
  bool SendResponse(int fd, const v1::Response& response);
  void ReapFinished();
  void Log(std::string_view message);

  AgentOptions options_;
  UniqueFd stop_fd_;      // eventfd: readable once Stop() was called
  std::mutex notify_mu_;  // NotifyForked steps must not interleave
  std::mutex conns_mu_;
  std::list<Connection> conns_;
};

}  // namespace forkd::agent
