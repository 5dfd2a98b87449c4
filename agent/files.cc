#include "agent/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/protocol.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::agent {
namespace {

std::string Message(const absl::Status& s) { return std::string(ToStd(s.message())); }

}  // namespace

v1::ReadFileResponse ReadFile(const v1::ReadFileRequest& req) {
  v1::ReadFileResponse resp;
  if (req.path().empty()) {
    resp.set_error("path is empty");
    return resp;
  }
  const size_t limit =
      (req.max_bytes() == 0 || req.max_bytes() > kMaxFileBytes) ? kMaxFileBytes : req.max_bytes();
  UniqueFd fd(::open(req.path().c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) {
    resp.set_error(Message(ErrnoStatus(errno, absl::StrCat("open ", req.path()))));
    return resp;
  }
  // Read one byte past the limit: that is how we learn the file is longer,
  // without trusting st_size (wrong for /proc and /sys files).
  std::string data(limit + 1, '\0');
  size_t got = 0;
  while (got < data.size()) {
    const ssize_t n = ::read(fd.get(), data.data() + got, data.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      resp.set_error(Message(ErrnoStatus(errno, absl::StrCat("read ", req.path()))));
      return resp;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  resp.set_truncated(got > limit);
  data.resize(std::min(got, limit));
  resp.set_data(std::move(data));
  return resp;
}

v1::WriteFileResponse WriteFile(const v1::WriteFileRequest& req) {
  v1::WriteFileResponse resp;
  if (req.path().empty()) {
    resp.set_error("path is empty");
    return resp;
  }
  if (req.data().size() > kMaxFileBytes) {
    resp.set_error(absl::StrCat("data is ", req.data().size(), " bytes; at most ", kMaxFileBytes,
                                " are accepted"));
    return resp;
  }
  if (req.mode() > 07777) {
    resp.set_error(absl::StrFormat("mode %#o has bits beyond 07777", req.mode()));
    return resp;
  }
  const mode_t mode = req.mode() == 0 ? 0644 : static_cast<mode_t>(req.mode());
  UniqueFd fd(
      ::open(req.path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, mode));
  if (!fd) {
    resp.set_error(Message(ErrnoStatus(errno, absl::StrCat("open ", req.path()))));
    return resp;
  }
  const std::string& data = req.data();
  size_t put = 0;
  while (put < data.size()) {
    const ssize_t n = ::write(fd.get(), data.data() + put, data.size() - put);
    if (n < 0) {
      if (errno == EINTR) continue;
      resp.set_error(Message(ErrnoStatus(errno, absl::StrCat("write ", req.path()))));
      return resp;
    }
    put += static_cast<size_t>(n);
  }
  // close() is where NFS-like and full-disk errors can surface; report them.
  if (::close(fd.release()) != 0) {
    resp.set_error(Message(ErrnoStatus(errno, absl::StrCat("close ", req.path()))));
  }
  return resp;
}

}  // namespace forkd::agent
