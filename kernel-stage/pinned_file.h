// PinnedFile: a file that must keep one SHA-256 (the guest kernel, the agent initramfs).
//
// forkd opens each pinned file at start (refusing to start on a mismatch) and calls Verify()
// before every template build; Verify() re-hashes only when the file's identity changed:
//
//   FORKD_ASSIGN_OR_RETURN(ks::Sha256Digest want, ks::ParseSha256Hex(flags.kernel_sha256));
//   FORKD_ASSIGN_OR_RETURN(ks::PinnedFile kernel, ks::PinnedFile::Open(flags.kernel, want));
//   ...
//   FORKD_RETURN_IF_ERROR(kernel.Verify());   // before each template build
//
// Identity = (st_dev, st_ino, st_size, st_mtim, st_ctim) of the path (symlinks followed). Any
// write, truncate, rename over the path or chmod changes at least one of them (ctime moves on
// every inode change and cannot be set from user space), so a file swapped or edited after the
// last hash is always re-hashed. The cache only saves re-reading an unchanged file.
//
// Verify() proves the file on disk at the time of the call. Whoever then loads it must not trust
// the path in between: forkd-vmm hashes the very bytes it loads against the same digests
// (--kernel-sha256/--initrd-sha256), which closes that window (docs/guest-pin.md).
#pragma once

#include <sys/types.h>

#include <ctime>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernel-stage/digest.h"

namespace forkd::kernel_stage {

// What PinnedFile compares to decide whether a re-hash is needed.
struct FileIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  timespec mtime{};
  timespec ctime{};
  bool operator==(const FileIdentity& o) const;
};

class PinnedFile {
 public:
  // Hashes `path` and compares with `expected`. FAILED_PRECONDITION on mismatch (see Verify);
  // the errno status of open/read otherwise.
  static absl::StatusOr<PinnedFile> Open(std::string path, const Sha256Digest& expected);

  // OK when the file still has the expected digest. Re-hashes only when the identity changed
  // since the last successful hash. On mismatch: FAILED_PRECONDITION
  //   "<path>: SHA-256 mismatch: expected <hex>, actual <hex>"
  // and the cached identity is dropped, so every later call re-hashes until the file is good.
  absl::Status Verify();

  const std::string& path() const { return path_; }
  const Sha256Digest& expected() const { return expected_; }
  // Number of full hashes so far (Open counts as one); lets tests see the cache work.
  int hash_count() const { return hash_count_; }

 private:
  PinnedFile(std::string path, const Sha256Digest& expected)
      : path_(std::move(path)), expected_(expected) {}
  absl::Status Rehash();

  std::string path_;
  Sha256Digest expected_;
  bool have_identity_ = false;
  FileIdentity identity_;  // of the file whose hash last matched
  int hash_count_ = 0;
};

// "<what>: SHA-256 mismatch: expected <hex>, actual <hex>" as FAILED_PRECONDITION; the one
// message format for every digest refusal. Carries the pin-mismatch mark (IsPinMismatch).
absl::Status DigestMismatch(std::string_view what, const Sha256Digest& expected,
                            const Sha256Digest& actual);

// FAILED_PRECONDITION with `message`, marked as a pin mismatch.
absl::Status PinMismatch(std::string_view message);
// Whether `status` (possibly annotated: Annotate keeps payloads) is a refusal by the guest pin
// (DigestMismatch, PinMismatch, CheckPin) rather than any other FAILED_PRECONDITION; forkd-vmm
// exits 4 for these.
bool IsPinMismatch(const absl::Status& status);

}  // namespace forkd::kernel_stage
