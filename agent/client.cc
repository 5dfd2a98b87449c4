#include "agent/client.h"

#include <sys/random.h>
#include <time.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "agent/protocol.h"
#include "common/errno_status.h"

namespace forkd::agent {
namespace {

std::string Message(const absl::Status& s) { return std::string(ToStd(s.message())); }

int64_t RealtimeNs() {
  timespec ts{};
  (void)::clock_gettime(CLOCK_REALTIME, &ts);  // cannot fail for CLOCK_REALTIME
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Checks that `resp` carries the kind of answer `expected` asks for.
absl::Status ExpectKind(const v1::Response& resp, v1::Response::KindCase expected,
                        std::string_view call) {
  if (resp.kind_case() == expected) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(std::string(call), ": agent answered with response kind ",
                                          static_cast<int>(resp.kind_case()), ", expected ",
                                          static_cast<int>(expected)));
}

}  // namespace

const char* OutcomeName(NotifyForkedResult::Outcome outcome) {
  switch (outcome) {
    case NotifyForkedResult::Outcome::kReseeded:
      return "reseeded";
    case NotifyForkedResult::Outcome::kNotReseeded:
      return "not_reseeded";
    case NotifyForkedResult::Outcome::kWrongGeneration:
      return "wrong_generation";
    case NotifyForkedResult::Outcome::kTimeout:
      return "timeout";
    case NotifyForkedResult::Outcome::kMalformed:
      return "malformed";
    case NotifyForkedResult::Outcome::kClosed:
      return "closed";
  }
  return "unknown";
}

absl::StatusOr<std::string> FreshEntropy(size_t n) {
  std::string bytes(n, '\0');
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::getrandom(bytes.data() + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "getrandom");
    }
    got += static_cast<size_t>(r);
  }
  return bytes;
}

absl::StatusOr<v1::Response> AgentClient::Call(v1::Request request, Deadline deadline) {
  if (!broken_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("connection unusable after an earlier failure: ", broken_));
  }
  const uint64_t id = next_id_++;
  request.set_id(id);
  std::string bytes;
  if (!request.SerializeToString(&bytes)) return absl::InternalError("cannot serialize request");

  // Any failure from here on leaves the stream in an unknown state.
  auto fail = [this](absl::Status s) {
    broken_ = Message(s);
    return s;
  };
  if (auto s = WriteFrame(fd_.get(), bytes, deadline, kMaxFrameBytes); !s.ok()) {
    return fail(Annotate(s, "send request"));
  }
  auto frame = ReadFrame(fd_.get(), deadline, kMaxFrameBytes);
  if (!frame.ok()) {
    const auto& st = frame.status();
    if (st.code() == absl::StatusCode::kResourceExhausted) {
      return fail(absl::DataLossError(absl::StrCat("agent answer: ", st.message())));
    }
    return fail(Annotate(st, "read answer"));
  }
  v1::Response resp;
  if (!resp.ParseFromString(*frame)) {
    return fail(absl::DataLossError("agent answer is not a valid Response"));
  }
  if (resp.has_error() && (resp.id() == id || resp.id() == 0)) {
    // The agent read our frame and refused it; the stream is still in step.
    return absl::AbortedError(absl::StrCat(
        "agent refused the request: ", v1::ErrorResponse::Code_Name(resp.error().code()), ": ",
        resp.error().message()));
  }
  if (resp.id() != id) {
    return fail(
        absl::DataLossError(absl::StrCat("agent answer has id ", resp.id(), ", expected ", id)));
  }
  return resp;
}

absl::StatusOr<v1::PingResponse> AgentClient::Ping(Deadline deadline) {
  v1::Request req;
  req.mutable_ping();
  FORKD_ASSIGN_OR_RETURN(v1::Response resp, Call(std::move(req), deadline));
  FORKD_RETURN_IF_ERROR(ExpectKind(resp, v1::Response::kPing, "Ping"));
  return resp.ping();
}

absl::StatusOr<v1::ExecResponse> AgentClient::Exec(const v1::ExecRequest& request,
                                                   Deadline deadline) {
  v1::Request req;
  *req.mutable_exec() = request;
  FORKD_ASSIGN_OR_RETURN(v1::Response resp, Call(std::move(req), deadline));
  FORKD_RETURN_IF_ERROR(ExpectKind(resp, v1::Response::kExec, "Exec"));
  return resp.exec();
}

absl::StatusOr<v1::ReadFileResponse> AgentClient::ReadFile(const v1::ReadFileRequest& request,
                                                           Deadline deadline) {
  v1::Request req;
  *req.mutable_read_file() = request;
  FORKD_ASSIGN_OR_RETURN(v1::Response resp, Call(std::move(req), deadline));
  FORKD_RETURN_IF_ERROR(ExpectKind(resp, v1::Response::kReadFile, "ReadFile"));
  return resp.read_file();
}

absl::StatusOr<v1::WriteFileResponse> AgentClient::WriteFile(const v1::WriteFileRequest& request,
                                                             Deadline deadline) {
  v1::Request req;
  *req.mutable_write_file() = request;
  FORKD_ASSIGN_OR_RETURN(v1::Response resp, Call(std::move(req), deadline));
  FORKD_RETURN_IF_ERROR(ExpectKind(resp, v1::Response::kWriteFile, "WriteFile"));
  return resp.write_file();
}

NotifyForkedResult AgentClient::NotifyForked(NotifyForkedArgs args, Deadline deadline) {
  using Outcome = NotifyForkedResult::Outcome;
  NotifyForkedResult result;
  auto outcome = [&](Outcome o, std::string detail) {
    result.outcome = o;
    result.detail = std::move(detail);
    return result;
  };

  if (args.entropy.empty()) {
    auto fresh = FreshEntropy(kMinEntropyBytes);
    // Without entropy there is nothing to reseed with; nothing was sent.
    if (!fresh.ok()) return outcome(Outcome::kNotReseeded, Message(fresh.status()));
    args.entropy = *std::move(fresh);
  }
  const uint64_t generation = args.generation;
  v1::Request req;
  auto* n = req.mutable_notify_forked();
  n->set_generation(generation);
  n->set_host_wall_clock_ns(args.host_wall_clock_ns != 0 ? args.host_wall_clock_ns : RealtimeNs());
  n->set_entropy(std::move(args.entropy));
  if (args.network) *n->mutable_network() = *args.network;

  auto resp = Call(std::move(req), deadline);
  if (!resp.ok()) {
    const std::string why = Message(resp.status());
    switch (resp.status().code()) {
      case absl::StatusCode::kDeadlineExceeded:
        return outcome(Outcome::kTimeout, why);
      case absl::StatusCode::kDataLoss:
        return outcome(Outcome::kMalformed, why);
      case absl::StatusCode::kAborted:
        return outcome(Outcome::kNotReseeded, why);
      default:  // kUnavailable, kFailedPrecondition, local send failures
        return outcome(Outcome::kClosed, why);
    }
  }
  if (auto s = ExpectKind(*resp, v1::Response::kNotifyForked, "NotifyForked"); !s.ok()) {
    broken_ = Message(s);
    return outcome(Outcome::kMalformed, Message(s));
  }
  const v1::NotifyForkedResponse& answer = resp->notify_forked();
  if (answer.generation() != generation) {
    broken_ = "generation mismatch";
    return outcome(
        Outcome::kWrongGeneration,
        absl::StrCat("agent echoed generation ", answer.generation(), ", expected ", generation));
  }
  result.response = answer;
  if (!answer.reseeded()) {
    return outcome(Outcome::kNotReseeded, answer.error().empty()
                                              ? "agent reported reseeded=false with no reason"
                                              : answer.error());
  }
  return outcome(Outcome::kReseeded, "");
}

}  // namespace forkd::agent
