// PinnedGuests: the guest images a daemon may boot into templates, each pinned by SHA-256
// (docs/guest-pin.md), and the stamp a snapshot of each must carry to be restored.
//
//   linux  --kernel/--initrd with --kernel-sha256/--initrd-sha256 (checked at start; forkd
//          refuses to start on a mismatch), or the waiver --insecure-skip-guest-verify (the
//          files are hashed at start for the log and for comparison, never vouched for).
//   probe  the in-tree probe guest, pinned to its own digest when the daemon starts; no
//          initramfs (its stamped initramfs digest is that of empty input).
//
// VerifyForBuild() re-verifies the files a build will load through kernel_stage::PinnedFile,
// which re-hashes only when (dev, inode, size, mtime, ctime) changed. forkd-vmm then hashes the
// bytes it actually loads against the same digests, which closes the window between this check
// and the load; this check is what refuses a swapped file with a typed error before anything is
// spawned. Thread-safe.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernel-stage/guest_pin.h"
#include "kernel-stage/pinned_file.h"

namespace forkd::templates {

struct GuestFilesConfig {
  std::string kernel, kernel_sha256;  // empty kernel: no Linux templates
  std::string initrd, initrd_sha256;  // empty initrd: none
  std::string probe_guest;
  bool insecure_skip_guest_verify = false;
};

class PinnedGuests {
 public:
  // Hashes every configured file once. A Linux file whose digest is not the given one is
  // FAILED_PRECONDITION naming the path and both digests (the daemon refuses to start); a
  // malformed digest INVALID_ARGUMENT. An unreadable probe guest is not an error here: probe
  // builds and restores are then refused with the reason.
  static absl::StatusOr<std::unique_ptr<PinnedGuests>> Open(const GuestFilesConfig& config);

  // Before every template build: the files it will load still have their pinned digests.
  // FAILED_PRECONDITION "<path>: SHA-256 mismatch: expected <hex>, actual <hex>" otherwise.
  // Under the waiver a Linux build is not checked (the caller warns).
  absl::Status VerifyForBuild(bool linux_guest);

  // The stamp a snapshot of `guest` ("linux" or "probe") must carry (unpinned = false). For
  // Linux under the waiver: the digests taken at start.
  absl::StatusOr<kernel_stage::GuestPin> ExpectedPin(const std::string& guest) const;

  bool insecure_skip_guest_verify() const { return config_.insecure_skip_guest_verify; }
  bool has_linux() const { return !config_.kernel.empty(); }
  const GuestFilesConfig& config() const { return config_; }
  // Lowercase hex of the Linux digests (pinned or, under the waiver, taken at start) and of the
  // probe guest's own digest (empty when unreadable).
  std::string kernel_hex() const;
  std::string initrd_hex() const;  // the empty-input digest without an initramfs
  std::string probe_hex() const;
  // How many full hashes the pinned files took so far (the cache at work; for tests/logs).
  int hash_count() const;

 private:
  explicit PinnedGuests(GuestFilesConfig config) : config_(std::move(config)) {}

  GuestFilesConfig config_;
  kernel_stage::Sha256Digest kernel_{}, initrd_{}, probe_{};
  mutable std::mutex mu_;  // the PinnedFile caches
  std::optional<kernel_stage::PinnedFile> kernel_file_, initrd_file_, probe_file_;
  absl::Status probe_error_;
};

}  // namespace forkd::templates
