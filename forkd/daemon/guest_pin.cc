#include "forkd/daemon/guest_pin.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <vector>

#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "forkd/snapshot/manifest.h"

namespace forkd::daemon {

absl::StatusOr<std::string> VerifyGuestPin(const std::string& what, const std::string& path,
                                           const std::string& expected_hex, bool skip_verify) {
  std::string want = expected_hex;
  std::transform(want.begin(), want.end(), want.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!skip_verify && (want.size() != 64 || !std::all_of(want.begin(), want.end(), [](char c) {
                         return std::isxdigit(static_cast<unsigned char>(c));
                       }))) {
    return absl::InvalidArgumentError(what + " digest must be 64 hex digits (SHA-256)");
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, what + " " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, what + " " + path);
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(what + " " + path + " is not a file");
  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::read(fd.get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "read " + what + " " + path);
    if (n == 0) return absl::DataLossError(what + " " + path + " shrank while being read");
    off += static_cast<size_t>(n);
  }
  const std::string got = snapshot::HexDigest(snapshot::Sha256(data));
  if (!skip_verify && got != want) {
    return absl::FailedPreconditionError(what + " " + path + " has SHA-256 " + got +
                                         ", not the pinned " + want);
  }
  return got;
}

}  // namespace forkd::daemon
