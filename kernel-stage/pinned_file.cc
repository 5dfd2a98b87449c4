#include "kernel-stage/pinned_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::kernel_stage {
namespace {

constexpr char kPinMismatchPayload[] = "type.forkd.dev/guest-pin.Mismatch";

bool SameTime(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

FileIdentity IdentityOf(const struct stat& st) {
  return FileIdentity{.dev = st.st_dev,
                      .ino = st.st_ino,
                      .size = st.st_size,
                      .mtime = st.st_mtim,
                      .ctime = st.st_ctim};
}

}  // namespace

bool FileIdentity::operator==(const FileIdentity& o) const {
  return dev == o.dev && ino == o.ino && size == o.size && SameTime(mtime, o.mtime) &&
         SameTime(ctime, o.ctime);
}

absl::Status PinMismatch(std::string_view message) {
  absl::Status s = absl::FailedPreconditionError(absl::string_view(message.data(), message.size()));
  s.SetPayload(kPinMismatchPayload, absl::Cord("1"));
  return s;
}

bool IsPinMismatch(const absl::Status& status) {
  return status.code() == absl::StatusCode::kFailedPrecondition &&
         status.GetPayload(kPinMismatchPayload).has_value();
}

absl::Status DigestMismatch(std::string_view what, const Sha256Digest& expected,
                            const Sha256Digest& actual) {
  return PinMismatch(absl::StrCat(absl::string_view(what.data(), what.size()),
                                  ": SHA-256 mismatch: expected ", HexDigest(expected), ", actual ",
                                  HexDigest(actual)));
}

absl::StatusOr<PinnedFile> PinnedFile::Open(std::string path, const Sha256Digest& expected) {
  PinnedFile f(std::move(path), expected);
  FORKD_RETURN_IF_ERROR(f.Rehash());
  return f;
}

absl::Status PinnedFile::Verify() {
  if (have_identity_) {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) {
      have_identity_ = false;
      return ErrnoStatus(errno, "stat " + path_);
    }
    if (IdentityOf(st) == identity_) return absl::OkStatus();
  }
  return Rehash();
}

absl::Status PinnedFile::Rehash() {
  have_identity_ = false;
  UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) return ErrnoStatus(errno, "open " + path_);
  // The identity is taken from the open file before and after hashing: if the file changed while
  // it was read, the hash may describe no version of it, so it is not cached (the next Verify
  // hashes again) and a mismatch is reported as what it is.
  struct stat before {};
  if (::fstat(fd.get(), &before) != 0) return ErrnoStatus(errno, "stat " + path_);
  ++hash_count_;
  FORKD_ASSIGN_OR_RETURN(Sha256Digest actual, HashFd(fd.get(), path_));
  if (actual != expected_) return DigestMismatch(path_, expected_, actual);
  struct stat after {};
  if (::fstat(fd.get(), &after) != 0) return ErrnoStatus(errno, "stat " + path_);
  if (IdentityOf(before) == IdentityOf(after)) {
    identity_ = IdentityOf(after);
    have_identity_ = true;
  }
  return absl::OkStatus();
}

}  // namespace forkd::kernel_stage
