#include "forkd/daemon/guest_pin.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>

#include "kernel-stage/digest.h"
#include "kernel-stage/pinned_file.h"

namespace forkd::daemon {

absl::StatusOr<std::string> VerifyGuestPin(const std::string& what, const std::string& path,
                                           const std::string& expected_hex, bool skip_verify) {
  std::string want = expected_hex;
  std::transform(want.begin(), want.end(), want.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::optional<kernel_stage::Sha256Digest> expected;
  if (!skip_verify) {
    auto parsed = kernel_stage::ParseSha256Hex(want);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(what + " digest must be 64 hex digits (SHA-256)");
    }
    expected = *parsed;
  }
  // The project's one hasher (kernel-stage/digest.h), streaming.
  auto got = kernel_stage::HashFile(path);
  if (!got.ok()) return got.status();
  if (expected && *got != *expected) {
    return kernel_stage::DigestMismatch(what + " " + path, *expected, *got);
  }
  return kernel_stage::HexDigest(*got);
}

}  // namespace forkd::daemon
