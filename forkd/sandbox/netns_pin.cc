#include "forkd/sandbox/netns_pin.h"

#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/errno_status.h"
#include "netfilter/netns.h"

namespace forkd::sandbox {

absl::StatusOr<UniqueFd> CreatePinnedNetns(const std::string& path) {
  {
    UniqueFd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!f) return ErrnoStatus(errno, "create netns pin " + path);
  }
  auto ns = netfilter::CreateNetns();
  if (!ns.ok()) {
    (void)::unlink(path.c_str());
    return ns.status();
  }
  const std::string src = "/proc/self/fd/" + std::to_string(ns->get());
  if (::mount(src.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    const int err = errno;
    (void)::unlink(path.c_str());
    return ErrnoStatus(err, "bind-mount netns on " + path);
  }
  return std::move(*ns);
}

absl::Status RemovePinnedNetns(const std::string& path) {
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return ErrnoStatus(errno, "unmount netns pin " + path);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "remove netns pin " + path);
  }
  return absl::OkStatus();
}

bool IsNetnsPath(const std::string& path) {
  // nsfs inodes are regular files; anything else (a FIFO would block open)
  // is refused before it is opened.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return false;
  return ::ioctl(fd.get(), NS_GET_NSTYPE) == CLONE_NEWNET;
}

}  // namespace forkd::sandbox
