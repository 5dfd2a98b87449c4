// kernel-stage: fetch or copy the guest kernel (or the agent initramfs) into place, pinned to a
// SHA-256. See kernel-stage/README.md; the exit codes are listed in --help.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include "kernel-stage/digest.h"
#include "kernel-stage/stage.h"

namespace forkd::kernel_stage {
namespace {

constexpr char kExitCodes[] = R"(Exit codes:
   0  staged (fetched/copied and verified) or the existing file verified
   1  internal error
   2  usage (missing option, --sha256 not 64 hex characters, http:// without --allow-http)
   3  digest-mismatch: the fetched/copied bytes have another SHA-256 (moved to quarantine)
   4  cached-mismatch: the existing DEST has another SHA-256 (moved to quarantine)
   5  unreachable: name resolution or connection failed
   6  tls: TLS handshake or certificate verification failed
   7  http-status: the server answered an HTTP error (404, 500, ...)
   8  truncated: the body ended early or the connection broke
   9  too-large: the body exceeds --max-bytes
  10  timeout: connect timeout, stalled transfer, or total timeout
  11  redirect: too many redirects, or a redirect to a refused protocol
  12  source-missing: a local source (PATH or file://) is missing or unreadable
  13  local-io: DEST directory missing or unwritable, fsync or rename failed
  14  disk-full: ENOSPC/EDQUOT while writing
On a mismatch DEST is never left in place: the file goes to DEST.quarantine.<actual sha256> and
both digests are printed. Nothing half-written is ever left at DEST.
)";

// "\r<dest>: 12.5 / 40.0 MiB" on stderr, at most every 1/4 s, only when stderr is a terminal.
class TerminalProgress {
 public:
  explicit TerminalProgress(std::string label) : label_(std::move(label)) {}
  void operator()(uint64_t done, uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(250) && done != total) return;
    last_ = now;
    shown_ = true;
    constexpr double kMiB = 1024.0 * 1024.0;
    if (total > 0) {
      (void)std::fprintf(stderr, "\r%s: %.1f / %.1f MiB", label_.c_str(),
                         static_cast<double>(done) / kMiB, static_cast<double>(total) / kMiB);
    } else {
      (void)std::fprintf(stderr, "\r%s: %.1f MiB", label_.c_str(),
                         static_cast<double>(done) / kMiB);
    }
  }
  void Finish() const {
    if (shown_) (void)std::fputc('\n', stderr);
  }

 private:
  std::string label_;
  std::chrono::steady_clock::time_point last_{};
  bool shown_ = false;
};

int Main(int argc, char** argv) {
  CLI::App app(
      "Fetch (https, file, or http with --allow-http) or copy a guest kernel or initramfs to "
      "DEST,\n"
      "verifying its SHA-256 while streaming; fsync, atomic rename, DEST.sha256 sidecar. An\n"
      "existing DEST is verified, not trusted.",
      "kernel-stage");
  app.footer(kExitCodes);
  std::string source, sha256_hex, dest, ca;
  bool allow_http = false, no_progress = false;
  long connect_timeout = 30, stall_timeout = 60, total_timeout = 1800, max_redirects = 5;
  uint64_t max_bytes = 1ull << 30;
  app.add_option("--source", source, "URL (https://, file://, http://) or local PATH")->required();
  app.add_option("--sha256", sha256_hex, "expected SHA-256, 64 hex characters (mandatory)")
      ->required();
  app.add_option("--dest", dest, "destination file; its directory must exist")->required();
  app.add_option("--ca", ca, "PEM CA bundle for https instead of the system store")
      ->check(CLI::ExistingFile);
  app.add_flag("--allow-http", allow_http, "permit plain http:// sources (the digest still binds)");
  app.add_option("--connect-timeout", connect_timeout, "seconds to establish a connection")
      ->check(CLI::Range(1L, 3600L))
      ->capture_default_str();
  app.add_option("--stall-timeout", stall_timeout,
                 "fail when no byte arrives for this many seconds")
      ->check(CLI::Range(1L, 3600L))
      ->capture_default_str();
  app.add_option("--timeout", total_timeout, "seconds for the whole transfer")
      ->check(CLI::Range(1L, 86400L))
      ->capture_default_str();
  app.add_option("--max-bytes", max_bytes, "largest accepted body")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--max-redirects", max_redirects, "redirects followed")
      ->check(CLI::Range(0L, 20L))
      ->capture_default_str();
  app.add_flag("--no-progress", no_progress, "no progress line even on a terminal");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help (rc 0) or the error
    return rc == 0 ? 0 : ExitCode(Failure::kUsage);
  }
  auto digest = ParseSha256Hex(sha256_hex);
  if (!digest.ok()) {
    (void)std::fprintf(stderr, "kernel-stage: --sha256: %s\n",
                       std::string(digest.status().message()).c_str());
    return ExitCode(Failure::kUsage);
  }
  StageOptions o;
  o.source = source;
  o.sha256 = *digest;
  o.dest = dest;
  o.ca_file = ca;
  o.allow_http = allow_http;
  o.connect_timeout = std::chrono::seconds(connect_timeout);
  o.stall_timeout = std::chrono::seconds(stall_timeout);
  o.total_timeout = std::chrono::seconds(total_timeout);
  o.max_bytes = max_bytes;
  o.max_redirects = max_redirects;
  TerminalProgress progress(dest);
  if (!no_progress && ::isatty(STDERR_FILENO) == 1) {
    o.progress = [&progress](uint64_t done, uint64_t total) { progress(done, total); };
  }
  auto r = Stage(o);
  progress.Finish();
  if (!r.ok()) {
    (void)std::fprintf(stderr, "kernel-stage: %s: %s\n", FailureName(FailureOf(r.status())),
                       std::string(r.status().message()).c_str());
    return ExitCodeFor(r.status());
  }
  (void)std::printf("%s %s %s (%llu bytes)\n", r->was_cached ? "verified" : "staged", dest.c_str(),
                    HexDigest(r->sha256).c_str(), static_cast<unsigned long long>(r->size));
  return 0;
}

}  // namespace
}  // namespace forkd::kernel_stage

int main(int argc, char** argv) {
  try {
    return forkd::kernel_stage::Main(argc, argv);
  } catch (const std::exception& e) {  // CLI11 or the standard library (e.g. bad_alloc)
    (void)std::fprintf(stderr, "kernel-stage: internal: %s\n", e.what());
  } catch (...) {
    (void)std::fprintf(stderr, "kernel-stage: internal: unknown exception\n");
  }
  return forkd::kernel_stage::ExitCode(forkd::kernel_stage::Failure::kInternal);
}
