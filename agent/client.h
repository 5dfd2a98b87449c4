// Host-side client of the guest agent, over an already connected stream socket
// (forkd's vsock multiplexer after "CONNECT <port>", or a unix socket in tests).
//
// NotifyForked returns a typed outcome because that is what the reseed gate acts
// on: only kReseeded makes a fork servable; every other outcome reaps it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/framing.h"
#include "agent/proto/agent.pb.h"
#include "common/unique_fd.h"

namespace forkd::agent {

struct NotifyForkedArgs {
  uint64_t generation = 0;
  int64_t host_wall_clock_ns = 0;  // 0: filled with the host's CLOCK_REALTIME
  std::string entropy;             // empty: 32 fresh bytes from getrandom()
  std::optional<v1::Network> network;
};

struct NotifyForkedResult {
  enum class Outcome {
    kReseeded,         // the agent reseeded (RNDADDENTROPY and RNDRESEEDCRNG succeeded)
    kNotReseeded,      // the agent answered, and says it did not reseed (see detail)
    kWrongGeneration,  // the answer echoes another generation than the one sent
    kTimeout,          // no complete answer by the deadline
    kMalformed,        // an answer arrived that is not a valid reply to this call
    kClosed,           // the connection closed or failed
  };
  Outcome outcome = Outcome::kClosed;
  std::string detail;  // why, for every outcome but kReseeded
  // The agent's full answer (clock step, per-step errors) when there was one.
  std::optional<v1::NotifyForkedResponse> response;

  bool reseeded() const { return outcome == Outcome::kReseeded; }
};

const char* OutcomeName(NotifyForkedResult::Outcome outcome);

// `n` bytes from getrandom() (the host's CRNG).
absl::StatusOr<std::string> FreshEntropy(size_t n = 32);

class AgentClient {
 public:
  explicit AgentClient(UniqueFd fd) : fd_(std::move(fd)) {}

  absl::StatusOr<v1::PingResponse> Ping(Deadline deadline);
  NotifyForkedResult NotifyForked(NotifyForkedArgs args, Deadline deadline);
  absl::StatusOr<v1::ExecResponse> Exec(const v1::ExecRequest& request, Deadline deadline);
  absl::StatusOr<v1::ReadFileResponse> ReadFile(const v1::ReadFileRequest& request,
                                                Deadline deadline);
  absl::StatusOr<v1::WriteFileResponse> WriteFile(const v1::WriteFileRequest& request,
                                                  Deadline deadline);

  // One round trip. Error codes:
  //   kDeadlineExceeded   no complete answer by the deadline
  //   kUnavailable        the connection closed or was reset
  //   kDataLoss           malformed answer: not a Response, oversize, wrong id
  //   kAborted            the agent answered with an ErrorResponse
  //   kFailedPrecondition an earlier call on this connection failed
  //   others              local failures (serialization, send)
  // After any failure but kAborted the stream is out of step with the agent (a
  // late answer may still arrive and must not be mistaken for the next one), so
  // later calls fail with kFailedPrecondition: open a new connection.
  absl::StatusOr<v1::Response> Call(v1::Request request, Deadline deadline);

 private:
  UniqueFd fd_;
  uint64_t next_id_ = 1;
  std::string broken_;  // why the connection is unusable; empty while it is fine
};

}  // namespace forkd::agent
