// Validation of every caller-chosen name that forkd turns into a path, an
// interface name or an nftables chain name.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace forkd::sandbox {

inline constexpr size_t kMaxIdLength = 64;

// OK when `id` matches [A-Za-z0-9][A-Za-z0-9_-]{0,63}; otherwise
// INVALID_ARGUMENT naming `what` and the rule (the id is quoted, shortened
// and with unprintable bytes escaped, so a hostile id cannot forge log lines).
absl::Status ValidateId(std::string_view what, std::string_view id);

// `text` shortened to `max` bytes with non-printable bytes as \xNN, for
// messages and logs.
std::string Printable(std::string_view text, size_t max = 80);

}  // namespace forkd::sandbox
