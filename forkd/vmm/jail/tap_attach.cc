#include "forkd/vmm/jail/tap_attach.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/vmm/devices/virtio/net.h"

namespace forkd::vmm::jail {
namespace {

// NLMSG_OK without the macro's int/__u32 comparison (clang's -Wsign-compare).
bool NetlinkMessageOk(const nlmsghdr* h, int len) {
  return len >= static_cast<int>(sizeof(nlmsghdr)) && h->nlmsg_len >= sizeof(nlmsghdr) &&
         h->nlmsg_len <= static_cast<unsigned>(len);
}

// Walks the attributes in [data, data + len) and calls fn(type, payload, size).
template <typename Fn>
void ForEachAttr(const void* data, size_t len, Fn fn) {
  const auto* a = static_cast<const rtattr*>(data);
  int remaining = static_cast<int>(len);
  for (; RTA_OK(a, remaining); a = RTA_NEXT(a, remaining)) {
    fn(a->rta_type & NLA_TYPE_MASK, RTA_DATA(a), RTA_PAYLOAD(a));
  }
}

absl::Status ParseLinkInfo(const void* data, size_t len, TapOwner* out, bool* is_tun) {
  ForEachAttr(data, len, [&](int type, const void* p, size_t n) {
    if (type == IFLA_INFO_KIND) {
      *is_tun = std::string(static_cast<const char*>(p), strnlen(static_cast<const char*>(p), n)) ==
                "tun";
    } else if (type == IFLA_INFO_DATA) {
      ForEachAttr(p, n, [&](int t, const void* v, size_t vn) {
        if ((t == IFLA_TUN_OWNER || t == IFLA_TUN_GROUP) && vn >= 4) {
          uint32_t id = 0;
          std::memcpy(&id, v, 4);
          if (t == IFLA_TUN_OWNER) {
            out->has_owner = true;
            out->owner = id;
          } else {
            out->has_group = true;
            out->group = id;
          }
        } else if (t == IFLA_TUN_PERSIST && vn >= 1) {
          out->persistent = *static_cast<const uint8_t*>(v) != 0;
        }
      });
    }
  });
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TapOwner> QueryTapOwner(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) return absl::InvalidArgumentError("bad tap name");
  UniqueFd sock(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!sock) return ErrnoStatus(errno, "netlink socket");
  struct {
    nlmsghdr hdr;
    ifinfomsg ifi;
    char attrs[64];
  } req{};
  req.hdr.nlmsg_type = RTM_GETLINK;
  req.hdr.nlmsg_flags = NLM_F_REQUEST;
  req.hdr.nlmsg_seq = 1;
  req.ifi.ifi_family = AF_UNSPEC;
  auto* a = reinterpret_cast<rtattr*>(req.attrs);
  a->rta_type = IFLA_IFNAME;
  a->rta_len = static_cast<unsigned short>(RTA_LENGTH(name.size() + 1));
  std::memcpy(RTA_DATA(a), name.c_str(), name.size() + 1);
  req.hdr.nlmsg_len = NLMSG_LENGTH(sizeof(ifinfomsg)) + RTA_ALIGN(a->rta_len);
  if (::send(sock.get(), &req, req.hdr.nlmsg_len, 0) < 0) return ErrnoStatus(errno, "RTM_GETLINK");
  alignas(nlmsghdr) char buf[16384];
  const ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
  if (n < 0) return ErrnoStatus(errno, "RTM_GETLINK answer");
  int len = static_cast<int>(n);
  for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NetlinkMessageOk(h, len);
       h = NLMSG_NEXT(h, len)) {
    if (h->nlmsg_type == NLMSG_ERROR) {
      const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
      if (e->error == -ENODEV) return absl::NotFoundError("no such interface " + name);
      return ErrnoStatus(-e->error, "RTM_GETLINK " + name);
    }
    if (h->nlmsg_type != RTM_NEWLINK) continue;
    const auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
    TapOwner out;
    bool is_tun = false;
    ForEachAttr(IFLA_RTA(ifi), IFLA_PAYLOAD(h), [&](int type, const void* p, size_t pn) {
      if (type == IFLA_LINKINFO) (void)ParseLinkInfo(p, pn, &out, &is_tun);
    });
    if (!is_tun) return absl::FailedPreconditionError(name + " is not a tun/tap device");
    return out;
  }
  return absl::InternalError("RTM_GETLINK " + name + ": no answer");
}

absl::StatusOr<UniqueFd> AttachHereAs(const std::string& name, uid_t uid, gid_t gid,
                                      const std::string& ctx) {
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    return ErrnoStatus(errno, ctx + ": open /dev/net/tun");
  }
  if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setresgid, gid, gid, gid) != 0 ||
      ::syscall(SYS_setresuid, uid, uid, uid) != 0) {
    return ErrnoStatus(errno, ctx + ": drop credentials");
  }
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    const int err = errno;
    return ErrnoStatus(err, ctx + (err == EPERM   ? ": TUNSETIFF (gone, or not ours)"
                                   : err == EBUSY ? ": TUNSETIFF (another process has it)"
                                                  : ": TUNSETIFF"));
  }
  ifreq got{};
  if (::ioctl(fd.get(), TUNGETIFF, &got) != 0) {
    return ErrnoStatus(errno, ctx + ": TUNGETIFF");
  }
  if ((got.ifr_flags & IFF_PERSIST) == 0) {
    return absl::FailedPreconditionError(ctx + ": not a persistent tap");
  }
  int hdr = static_cast<int>(virtio::kNetHeaderSize);
  if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &hdr) != 0) {
    return ErrnoStatus(errno, ctx + ": TUNSETVNETHDRSZ");
  }
  if (::ioctl(fd.get(), TUNSETOFFLOAD, 0UL) != 0) {
    return ErrnoStatus(errno, ctx + ": TUNSETOFFLOAD");
  }
  return fd;
}

absl::StatusOr<UniqueFd> AttachTapAs(const std::string& name, const std::string& netns_path,
                                     uid_t uid, gid_t gid) {
  const std::string ctx =
      absl::StrCat("attach tap ", name, " in ", netns_path.empty() ? "own netns" : netns_path);
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(ctx + ": bad interface name");
  }
  UniqueFd ns;
  if (!netns_path.empty()) {
    ns = UniqueFd(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) return ErrnoStatus(errno, ctx + ": open netns");
  }
  absl::StatusOr<UniqueFd> result = absl::InternalError(ctx + ": thread did not run");
  // This thread enters the namespace and then gives up its credentials
  // (raw syscalls: glibc's wrappers would change every thread's); it ends
  // right after, so nothing else ever runs with either.
  std::thread t([&] {
    if (ns && ::setns(ns.get(), CLONE_NEWNET) != 0) {
      result = ErrnoStatus(errno, ctx + ": setns");
      return;
    }
    auto owner = QueryTapOwner(name);
    if (!owner.ok()) {
      result = Annotate(owner.status(), ctx);
      return;
    }
    const bool owned =
        owner->has_owner ? owner->owner == uid : (owner->has_group && owner->group == gid);
    if (!owned) {
      result = absl::PermissionDeniedError(
          absl::StrCat(ctx, ": owner ", owner->has_owner ? std::to_string(owner->owner) : "none",
                       " group ", owner->has_group ? std::to_string(owner->group) : "none",
                       ", expected uid ", uid, " or gid ", gid));
      return;
    }
    result = AttachHereAs(name, uid, gid, ctx);
  });
  t.join();
  return result;
}

}  // namespace forkd::vmm::jail
