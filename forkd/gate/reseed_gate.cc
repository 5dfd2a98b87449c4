#include "forkd/gate/reseed_gate.h"

#include <cstdio>

#include "common/errno_status.h"

namespace forkd::gate {
namespace {

absl::StatusCode CodeFor(ReapCause cause) {
  switch (cause) {
    case ReapCause::kNotReseeded:
    case ReapCause::kNetworkError:
    case ReapCause::kGenerationError:
      return absl::StatusCode::kFailedPrecondition;
    case ReapCause::kWrongGeneration:
      return absl::StatusCode::kDataLoss;
    case ReapCause::kNoAnswer:
      return absl::StatusCode::kDeadlineExceeded;
    case ReapCause::kMalformed:
      return absl::StatusCode::kDataLoss;
    case ReapCause::kClosed:
    case ReapCause::kConnectFailed:
      return absl::StatusCode::kUnavailable;
    case ReapCause::kHostError:
      break;
  }
  return absl::StatusCode::kInternal;
}

ReapCause CauseFor(agent::NotifyForkedResult::Outcome outcome) {
  using O = agent::NotifyForkedResult::Outcome;
  switch (outcome) {
    case O::kNotReseeded:
      return ReapCause::kNotReseeded;
    case O::kWrongGeneration:
      return ReapCause::kWrongGeneration;
    case O::kTimeout:
      return ReapCause::kNoAnswer;
    case O::kMalformed:
      return ReapCause::kMalformed;
    case O::kClosed:
    case O::kReseeded:
      break;
  }
  return ReapCause::kClosed;
}

absl::Status ReapWith(ForkResources& fork, ReapCause cause, const std::string& why) {
  absl::Status reaped = Reap(fork);
  std::string message = "fork " + fork.fork_id + " reaped (" + ReapCauseName(cause) + "): " + why;
  absl::StatusCode code = CodeFor(cause);
  if (!reaped.ok()) {
    message += "; reap incomplete: " + std::string(reaped.message());
    code = absl::StatusCode::kInternal;
  }
  absl::Status out(code, message);
  out.SetPayload(kReapCausePayload, absl::Cord(ReapCauseName(cause)));
  // The daemon's log line for every reaped fork; never contains entropy.
  (void)std::fprintf(stderr, "forkd: %s\n", message.c_str());
  return out;
}

}  // namespace

const char* ReapCauseName(ReapCause cause) {
  switch (cause) {
    case ReapCause::kNotReseeded:
      return "not_reseeded";
    case ReapCause::kNetworkError:
      return "network_error";
    case ReapCause::kGenerationError:
      return "generation_error";
    case ReapCause::kWrongGeneration:
      return "wrong_generation";
    case ReapCause::kNoAnswer:
      return "no_answer";
    case ReapCause::kMalformed:
      return "malformed_answer";
    case ReapCause::kClosed:
      return "connection_closed";
    case ReapCause::kConnectFailed:
      return "connect_failed";
    case ReapCause::kHostError:
      return "host_error";
  }
  return "unknown";
}

std::optional<ReapCause> ReapCauseOf(const absl::Status& status) {
  auto payload = status.GetPayload(kReapCausePayload);
  if (!payload) return std::nullopt;
  for (ReapCause c :
       {ReapCause::kNotReseeded, ReapCause::kNetworkError, ReapCause::kGenerationError,
        ReapCause::kWrongGeneration, ReapCause::kNoAnswer, ReapCause::kMalformed,
        ReapCause::kClosed, ReapCause::kConnectFailed, ReapCause::kHostError}) {
    if (std::string(*payload) == ReapCauseName(c)) return c;
  }
  return std::nullopt;
}

absl::Status AdmitFork(ForkResources& fork, absl::StatusOr<UniqueFd> connection,
                       uint64_t generation, const std::optional<agent::v1::Network>& network,
                       const GateOptions& options, agent::v1::NotifyForkedResponse* answer_out) {
  if (!connection.ok()) {
    return ReapWith(fork, ReapCause::kConnectFailed, std::string(connection.status().message()));
  }
  auto entropy = agent::FreshEntropy(options.entropy_bytes);
  if (!entropy.ok())
    return ReapWith(fork, ReapCause::kHostError, std::string(entropy.status().message()));
  agent::AgentClient client(std::move(*connection));
  agent::NotifyForkedArgs args;
  args.generation = generation;
  args.entropy = std::move(*entropy);
  args.network = network;
  const agent::NotifyForkedResult result =
      client.NotifyForked(std::move(args), agent::DeadlineIn(options.deadline));
  if (answer_out != nullptr && result.response) *answer_out = *result.response;
  if (!result.reseeded()) return ReapWith(fork, CauseFor(result.outcome), result.detail);
  // Reseeded, and the client checked the generation echo. The answer must
  // also report the fork's own network identity and generation applied.
  const agent::v1::NotifyForkedResponse& answer = *result.response;
  if (!answer.network_error().empty()) {
    return ReapWith(fork, ReapCause::kNetworkError, answer.network_error());
  }
  if (!answer.generation_error().empty()) {
    return ReapWith(fork, ReapCause::kGenerationError, answer.generation_error());
  }
  return absl::OkStatus();
}

}  // namespace forkd::gate
