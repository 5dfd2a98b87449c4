#include "common/errno_status.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/cord.h"

namespace forkd {

absl::StatusCode ErrnoToCode(int err) {
  switch (err) {
    case 0:
      return absl::StatusCode::kOk;
    case EINVAL:
    case ERANGE:
    case E2BIG:
    case ENAMETOOLONG:
      return absl::StatusCode::kInvalidArgument;
    case ENOENT:
    case ENODEV:
    case ENXIO:
    case ESRCH:
      return absl::StatusCode::kNotFound;
    case EEXIST:
    case EADDRINUSE:
      return absl::StatusCode::kAlreadyExists;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
      return absl::StatusCode::kResourceExhausted;
    case EBUSY:
    case EAGAIN:
    case EINTR:
      return absl::StatusCode::kUnavailable;
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    case EOPNOTSUPP:
    case ENOSYS:
    case EPROTONOSUPPORT:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

std::string_view ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  if (name == nullptr) return "errno ?";
  return name;
}

absl::Status ErrnoStatus(int err, std::string_view context) {
  const char* desc = strerrordesc_np(err);
  std::string msg(context);
  msg.append(": ").append(ErrnoName(err)).append(" (").append(desc ? desc : "unknown").append(")");
  return {ErrnoToCode(err), msg};
}

absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  std::string msg(context);
  msg.append(": ").append(status.message().data(), status.message().size());
  absl::Status out(status.code(), msg);
  // Payloads say what kind of failure this is (e.g. a guest-pin refusal); context keeps them.
  status.ForEachPayload(
      [&out](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

}  // namespace forkd
