// Helpers that turn a failed system call into an absl::Status carrying errno
// and the context a reader needs ("open /dev/net/tun: EACCES (Permission denied)").
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd {

// Maps an errno value to the closest absl status code.
absl::StatusCode ErrnoToCode(int err);

// "<context>: <ENAME> (<strerror>)" with a code derived from `err`.
absl::Status ErrnoStatus(int err, std::string_view context);

// Prefixes `context: ` to a non-OK status, keeping its code and payloads.
absl::Status Annotate(const absl::Status& status, std::string_view context);

// The symbolic name of an errno value ("EEXIST"), or "errno N".
std::string_view ErrnoName(int err);

}  // namespace forkd

// Returns early from the enclosing function when `expr` is not OK.
#define FORKD_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::absl::Status forkd_status_ = (expr);         \
    if (!forkd_status_.ok()) return forkd_status_; \
  } while (0)

#define FORKD_CONCAT_INNER_(a, b) a##b
#define FORKD_CONCAT_(a, b) FORKD_CONCAT_INNER_(a, b)
// FORKD_ASSIGN_OR_RETURN(auto x, StatusOrExpr());
// `lhs` is a declaration ("auto x"), so it cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define FORKD_ASSIGN_OR_RETURN(lhs, expr)                          \
  auto FORKD_CONCAT_(forkd_or_, __LINE__) = (expr);                \
  if (!FORKD_CONCAT_(forkd_or_, __LINE__).ok())                    \
    return std::move(FORKD_CONCAT_(forkd_or_, __LINE__)).status(); \
  lhs = std::move(FORKD_CONCAT_(forkd_or_, __LINE__)).value()
// NOLINTEND(bugprone-macro-parentheses)

namespace forkd {
// absl in Debian 12 has its own string_view type; this bridges to std.
inline std::string_view ToStd(absl::string_view s) { return {s.data(), s.size()}; }
}  // namespace forkd
