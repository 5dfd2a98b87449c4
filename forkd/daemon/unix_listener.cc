#include "forkd/daemon/unix_listener.h"

#include <grp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/errno_status.h"
#include "grpcpp/server_posix.h"
#include "spdlog/spdlog.h"

namespace forkd::daemon {

absl::StatusOr<std::unique_ptr<UnixListener>> UnixListener::Bind(const std::string& path,
                                                                 const std::string& group) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError("unix socket path " + path + " is too long");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus(errno, "socket");
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(path + " exists and is not a socket");
    }
    // A live forkd answers a connect: never steal its socket.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return absl::AlreadyExistsError("another process serves " + path);
    }
    ::unlink(path.c_str());
  }
  gid_t gid = static_cast<gid_t>(-1);
  if (!group.empty()) {
    struct group* g = ::getgrnam(group.c_str());
    if (!g) return absl::InvalidArgumentError("--socket-group " + group + ": no such group");
    gid = g->gr_gid;
  }
  // Bind with a umask that never leaves the socket wider than 0660, then set it.
  const mode_t old = ::umask(0117);
  const int r = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  const int err = errno;
  ::umask(old);
  if (r != 0) return ErrnoStatus(err, "bind " + path);
  if (::chmod(path.c_str(), 0660) != 0) return ErrnoStatus(errno, "chmod 0660 " + path);
  if (gid != static_cast<gid_t>(-1) && ::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) {
    return ErrnoStatus(errno, "chown " + path + " to group " + group);
  }
  if (::listen(fd.get(), 512) != 0) return ErrnoStatus(errno, "listen " + path);
  std::unique_ptr<UnixListener> l(new UnixListener(path, std::move(fd)));
  l->wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!l->wake_) return ErrnoStatus(errno, "eventfd");
  return l;
}

UnixListener::~UnixListener() {
  Stop();
  ::unlink(path_.c_str());
}

void UnixListener::Serve(grpc::Server* server, PeerRegistry* peers) {
  thread_ = std::thread([this, server, peers] { Loop(server, peers); });
}

void UnixListener::Stop() {
  stop_ = true;
  const uint64_t one = 1;
  if (wake_) (void)!::write(wake_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void UnixListener::Loop(grpc::Server* server, PeerRegistry* peers) {
  while (!stop_) {
    pollfd p[2] = {{fd_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::critical("unix listener {}: poll: {}", path_, std::strerror(errno));
      return;
    }
    if (stop_) return;
    if (!(p[0].revents & POLLIN)) continue;
    const int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) {
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
        spdlog::error("unix listener {}: accept: {}", path_, std::strerror(errno));
      }
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    std::string who = "uid=? pid=?";
    if (::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      who = "uid=" + std::to_string(cred.uid) + " gid=" + std::to_string(cred.gid) +
            " pid=" + std::to_string(cred.pid);
    }
    // gRPC names a connection added from an fd "fd:<n>" (its peer string).
    peers->Set("fd:" + std::to_string(c), who);
    spdlog::debug("unix connection fd:{} from {}", c, who);
    grpc::AddInsecureChannelFromFd(server, c);
  }
}

}  // namespace forkd::daemon
