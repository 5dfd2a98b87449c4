// forkd's unix socket: created 0660 (group configurable), refused when
// another forkd already serves it; each accepted connection's peer
// credentials (SO_PEERCRED) are recorded for the per-call log, then the
// connection is handed to the gRPC server.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/daemon/service.h"
#include "grpcpp/grpcpp.h"

namespace forkd::daemon {

class UnixListener {
 public:
  static absl::StatusOr<std::unique_ptr<UnixListener>> Bind(const std::string& path,
                                                            const std::string& group);
  ~UnixListener();
  // Accepts until Stop(), handing connections to `server`.
  void Serve(grpc::Server* server, PeerRegistry* peers);
  void Stop();

 private:
  UnixListener(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  void Loop(grpc::Server* server, PeerRegistry* peers);
  std::string path_;
  UniqueFd fd_;
  UniqueFd wake_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace forkd::daemon
