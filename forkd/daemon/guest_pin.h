// The guest kernel/initrd pin: forkd refuses to start on a kernel or initrd
// whose SHA-256 is not the one the operator gave (--kernel-sha256,
// --initrd-sha256), unless --insecure-skip-guest-verify says otherwise.
//
// This is the one function behind those flags; it hashes with the project's
// one hasher (kernel-stage/digest.h) and reports a mismatch as
// kernel_stage::DigestMismatch does (docs/guest-pin.md).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace forkd::daemon {

// Returns the file's SHA-256 (lowercase hex) when it equals `expected_hex`
// (case-insensitive); with `skip_verify` the digest is returned without a
// comparison (and `expected_hex` may be empty). FAILED_PRECONDITION names
// the file and both digests on a mismatch; INVALID_ARGUMENT for a malformed
// expected digest; NOT_FOUND etc. for an unreadable file.
absl::StatusOr<std::string> VerifyGuestPin(const std::string& what, const std::string& path,
                                           const std::string& expected_hex, bool skip_verify);

}  // namespace forkd::daemon
