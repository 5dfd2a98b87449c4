// The fork-correctness gate (DESIGN.md §3). A restored fork shares its CRNG
// state, clocks and identifiers with every sibling; it may be served only after
// its guest agent proves, within a deadline, that it credited fresh host
// entropy (RNDADDENTROPY). Every other outcome reaps the fork and returns a
// typed error: a reaped fork is never reported ready.
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
  kNotReseeded,    // the agent answered reseeded=false
  kNoAnswer,       // no answer by the deadline (silent or late agent)
  kMalformed,      // the answer was not a valid reply
  kClosed,         // the connection closed or failed
  kConnectFailed,  // no connection to the agent at all
  kHostError,      // the host could not produce entropy
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
// `network`) over `connection` and waits for the answer. OK: the fork reseeded
// and may be served. Otherwise the fork is reaped (Reap) before returning an
// error whose code and ReapCause say why:
//   kNotReseeded -> FAILED_PRECONDITION, kNoAnswer -> DEADLINE_EXCEEDED,
//   kMalformed -> DATA_LOSS, kClosed/kConnectFailed -> UNAVAILABLE,
//   kHostError -> INTERNAL; INTERNAL also when the reap itself left something.
absl::Status AdmitFork(ForkResources& fork, absl::StatusOr<UniqueFd> connection,
                       uint64_t generation, const std::optional<agent::v1::Network>& network,
                       const GateOptions& options = {});

}  // namespace forkd::gate
