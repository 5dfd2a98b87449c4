#include "forkd/vmm/devices/virtio/tap.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/vmm/devices/virtio/net.h"

namespace forkd::vmm::virtio {
namespace {

absl::StatusOr<UniqueFd> AttachHere(const std::string& name, const std::string& ctx) {
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return ErrnoStatus(errno, ctx + ": open /dev/net/tun");
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  // TUNSETIFF would create a missing tap; the VMM must attach to the one
  // forkd prepared (a tap created here would have no route to anything).
  // SIOCGIFINDEX on any socket of this namespace tells whether it exists.
  UniqueFd probe(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!probe) return ErrnoStatus(errno, ctx + ": socket");
  ifreq q{};
  std::memcpy(q.ifr_name, name.data(), name.size());
  if (::ioctl(probe.get(), SIOCGIFINDEX, &q) != 0) {
    if (errno == ENODEV) return absl::NotFoundError(ctx + ": no such interface");
    return ErrnoStatus(errno, ctx + ": SIOCGIFINDEX");
  }
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    const int err = errno;
    const char* why = err == EPERM    ? " (the tap belongs to another user)"
                      : err == EBUSY  ? " (another process is attached to it)"
                      : err == EINVAL ? " (not a single-queue tap)"
                                      : "";
    return ErrnoStatus(err, ctx + ": TUNSETIFF" + why);
  }
  int hdr = static_cast<int>(kNetHeaderSize);
  if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &hdr) != 0) {
    return ErrnoStatus(errno, ctx + ": TUNSETVNETHDRSZ");
  }
  // No offloads: the guest gets (and sends) only complete frames.
  if (::ioctl(fd.get(), TUNSETOFFLOAD, 0UL) != 0) {
    return ErrnoStatus(errno, ctx + ": TUNSETOFFLOAD");
  }
  return fd;
}

}  // namespace

absl::StatusOr<UniqueFd> OpenTap(const std::string& name, const std::string& netns_path) {
  const std::string ctx =
      absl::StrCat("attach tap ", name, " in ", netns_path.empty() ? "own netns" : netns_path);
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(ctx, ": bad interface name"));
  }
  if (netns_path.empty()) return AttachHere(name, ctx);
  UniqueFd ns(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns) return ErrnoStatus(errno, ctx + ": open netns");
  absl::StatusOr<UniqueFd> result = absl::InternalError(ctx + ": thread did not run");
  // setns(CLONE_NEWNET) moves only the calling thread; this one ends right
  // after, so no thread that does anything else is ever in that namespace.
  std::thread t([&] {
    if (::setns(ns.get(), CLONE_NEWNET) != 0) {
      result = ErrnoStatus(errno, ctx + ": setns");
      return;
    }
    result = AttachHere(name, ctx);
  });
  t.join();
  return result;
}

}  // namespace forkd::vmm::virtio
