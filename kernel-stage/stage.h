// Staging a pinned file (the guest kernel, the agent initramfs): fetch or copy it next to its
// destination, verify SHA-256 while streaming, fsync, rename into place, write a ".sha256"
// sidecar. An existing destination is verified, never trusted. Links forkd_kernel_stage_fetch
// (libcurl); the `kernel-stage` binary is a thin CLI over Stage().
//
//   ks::StageOptions o{.source = "https://example.org/vmlinux", .sha256 = digest,
//                      .dest = "/var/lib/forkd/vmlinux"};
//   absl::StatusOr<ks::StageResult> r = ks::Stage(o);
//   if (!r.ok()) return ks::ExitCodeFor(r.status());   // the documented exit codes
//
// Guarantees: `dest` is either absent, or the previous verified file, or the new verified file;
// nothing half-written is ever visible at `dest` (the body goes to a temp file ".<name>.stage.*"
// beside it, which is removed on every failure). A file whose digest does not match (fresh or
// cached) is renamed to `<dest>.quarantine.<actual-hex>` (QuarantinePath) and the sidecar
// removed.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernel-stage/digest.h"

namespace forkd::kernel_stage {

// Every way Stage can fail, each with its own process exit code (kernel-stage --help and
// kernel-stage/README.md list them). The status returned by Stage carries one of these
// (FailureOf); the message is one line.
enum class Failure : int {
  kInternal = 1,        // a bug or an unexpected library error
  kUsage = 2,           // bad arguments (digest not 64 hex, http:// without --allow-http, ...)
  kDigestMismatch = 3,  // the fetched/copied bytes have another digest (quarantined)
  kCachedMismatch = 4,  // the existing dest has another digest (quarantined)
  kUnreachable = 5,     // name resolution or connection failed
  kTls = 6,             // TLS handshake or certificate verification failed
  kHttpStatus = 7,      // the server answered an HTTP error (404, 500, ...)
  kTruncated = 8,       // the body ended before its announced length / the connection broke
  kTooLarge = 9,        // the body exceeds --max-bytes
  kTimeout = 10,        // connect timeout, stalled transfer or total timeout
  kRedirect = 11,       // too many redirects, or a redirect to a refused protocol
  kSourceMissing = 12,  // local source (PATH or file://) missing or unreadable
  kLocalIo = 13,        // dest directory missing, not writable, fsync/rename failed
  kDiskFull = 14,       // ENOSPC / EDQUOT while writing the temp file
};

int ExitCode(Failure f);
// The failure a Stage status carries; kInternal for a status Stage did not make.
Failure FailureOf(const absl::Status& status);
// The exit code for a Stage result: 0 for OK.
int ExitCodeFor(const absl::Status& status);
// Short name ("digest-mismatch") for logs and --help.
const char* FailureName(Failure f);

struct StageOptions {
  // "https://...", "file:///...", "http://..." (only with allow_http), or a local path.
  std::string source;
  Sha256Digest sha256{};
  std::string dest;
  std::string ca_file;  // PEM bundle replacing the system CAs for https; empty: system store
  bool allow_http = false;
  std::chrono::seconds connect_timeout{30};
  // No byte for this long fails the transfer (a stalled server).
  std::chrono::seconds stall_timeout{60};
  std::chrono::seconds total_timeout{30 * 60};
  uint64_t max_bytes = 1ull << 30;  // 1 GiB: no kernel or initramfs is larger
  long max_redirects = 5;
  // Called as bytes arrive (total 0 when unknown); the CLI prints it on a terminal.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct StageResult {
  Sha256Digest sha256{};
  uint64_t size = 0;
  bool was_cached = false;  // dest existed and verified; nothing was fetched
};

absl::StatusOr<StageResult> Stage(const StageOptions& options);

// `<dest>.sha256`: "<hex>  <basename>\n" (sha256sum -c format). Informational: forkd never
// trusts it, it re-hashes the file.
std::string SidecarPath(const std::string& dest);
// `<dest>.quarantine.<actual hex>` (".N" appended when that name is taken).
std::string QuarantinePath(const std::string& dest, const Sha256Digest& actual);

}  // namespace forkd::kernel_stage
