#include "forkd/snapshot/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::snapshot {
namespace {

// Removes the temp file unless disarmed after a successful rename.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (!path_.empty()) (void)::unlink(path_.c_str());
  }
  void Disarm() { path_.clear(); }

 private:
  std::string path_;
};

absl::Status WriteAll(int fd, std::span<const uint8_t> bytes, const std::string& what) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write " + what);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status FsyncDir(const std::filesystem::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open directory " + dir.string());
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync directory " + dir.string());
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::filesystem::path& path,
                                 std::span<const uint8_t> bytes) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  std::string tmpl = (dir / ("." + path.filename().string() + ".tmp.XXXXXX")).string();
  UniqueFd fd(::mkostemp(tmpl.data(), O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "create temp file for " + path.string());
  TempFileGuard guard(tmpl);
  // mkstemp creates 0600; snapshots are read by VMM children that may run as other uids.
  if (::fchmod(fd.get(), 0644) != 0) return ErrnoStatus(errno, "fchmod " + tmpl);
  FORKD_RETURN_IF_ERROR(WriteAll(fd.get(), bytes, tmpl));
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync " + tmpl);
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, "rename " + tmpl + " to " + path.string());
  }
  guard.Disarm();
  return FsyncDir(dir);
}

absl::StatusOr<std::vector<uint8_t>> ReadFileBounded(const std::filesystem::path& path,
                                                     uint64_t max_bytes) {
  // O_NONBLOCK: a FIFO planted in place of a snapshot file must fail the S_ISREG check below,
  // not block the open forever. It has no effect on reads of a regular file.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return ErrnoStatus(errno, "open " + path.string());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat " + path.string());
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path.string(), ": not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::OutOfRangeError(
        absl::StrCat(path.string(), ": ", st.st_size, " bytes exceeds the limit of ", max_bytes));
  }
  std::vector<uint8_t> out(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::read(fd.get(), out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read " + path.string());
    }
    if (n == 0) break;  // shrank under us; the size check below reports it
    done += static_cast<size_t>(n);
  }
  if (done != out.size()) {
    return absl::DataLossError(absl::StrCat(path.string(), ": short read (", done, " of ",
                                            out.size(), " bytes): file changed while reading"));
  }
  return out;
}

}  // namespace forkd::snapshot
