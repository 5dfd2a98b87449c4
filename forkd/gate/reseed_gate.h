// The fork-correctness gate (docs/fork-correctness.md). A restored fork shares
// its CRNG state, clocks and identifiers with every sibling; it may be served
// only after its guest agent proves, within a deadline, that it reseeded its
// CRNG from fresh host entropy (RNDADDENTROPY + RNDRESEEDCRNG), took its own
// network identity and recorded this fork's generation. Every other outcome
// reaps the fork and returns a typed error: a reaped fork is never reported
// ready.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/client.h"
#include "common/unique_fd.h"
#include "forkd/gate/fork_resources.h"

namespace forkd::gate {

enum class ReapCause {
  kNotReseeded,      // the agent answered reseeded=false
  kNetworkError,     // reseeded, but the fork's own MAC/address was not applied
  kGenerationError,  // reseeded, but the generation could not be recorded
  kWrongGeneration,  // the answer echoes another generation than the one sent
  kNoAnswer,         // no answer by the deadline (silent or late agent)
  kMalformed,        // the answer was not a valid reply
  kClosed,           // the connection closed or failed
  kConnectFailed,    // no connection to the agent at all
  kHostError,        // the host could not produce entropy
};
const char* ReapCauseName(ReapCause cause);

// The payload key under which a gate error carries its ReapCause name.
inline constexpr char kReapCausePayload[] = "forkd.reap_cause";
// The cause of a gate error, if `status` is one.
std::optional<ReapCause> ReapCauseOf(const absl::Status& status);

struct GateOptions {
  std::chrono::milliseconds deadline{2000};
  size_t entropy_bytes = 32;
};

// Sends NotifyForked (fresh getrandom() entropy, `generation`, the host clock,
// `network`) over `connection` and waits for the answer. OK: the fork
// reseeded, echoed `generation`, and reported neither a network_error nor a
// generation_error, so it may be served. (A fork that kept the template's MAC
// or address would collide with its siblings.) A clock_error alone does not
// reap. Otherwise the fork is reaped (Reap) before returning an error whose
// code and ReapCause say why:
//   kNotReseeded, kNetworkError, kGenerationError -> FAILED_PRECONDITION,
//   kWrongGeneration -> DATA_LOSS, kNoAnswer -> DEADLINE_EXCEEDED,
//   kMalformed -> DATA_LOSS, kClosed/kConnectFailed -> UNAVAILABLE,
//   kHostError -> INTERNAL; INTERNAL also when the reap itself left something.
// `answer`, when given, receives the agent's answer whenever there was one
// (admitted or not): its clock step and per-step errors.
absl::Status AdmitFork(ForkResources& fork, absl::StatusOr<UniqueFd> connection,
                       uint64_t generation, const std::optional<agent::v1::Network>& network,
                       const GateOptions& options = {},
                       agent::v1::NotifyForkedResponse* answer = nullptr);

}  // namespace forkd::gate
