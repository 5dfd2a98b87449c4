#include "netfilter/links.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netlink/addr.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>

#include <utility>
#include "common/c_ptr.h"

#include "common/errno_status.h"
#include "netfilter/netns.h"
#include "netfilter/policy.h"

namespace forkd::netfilter {
namespace {

// IF_OPER_UP from <linux/if.h>, which cannot be included beside <net/if.h>.
constexpr uint8_t kOperUp = 6;

using LinkPtr = CPtr<rtnl_link, rtnl_link_put>;
using AddrPtr = CPtr<rtnl_addr, rtnl_addr_put>;
using RoutePtr = CPtr<rtnl_route, rtnl_route_put>;
using NlAddrPtr = CPtr<nl_addr, nl_addr_put>;

absl::StatusCode NlCode(int err) {
  switch (-err < 0 ? err : -err) {
    case NLE_EXIST:
      return absl::StatusCode::kAlreadyExists;
    case NLE_OBJ_NOTFOUND:
    case NLE_NODEV:
      return absl::StatusCode::kNotFound;
    case NLE_PERM:
      return absl::StatusCode::kPermissionDenied;
    case NLE_INVAL:
    case NLE_RANGE:
      return absl::StatusCode::kInvalidArgument;
    case NLE_BUSY:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status NlStatus(int err, const std::string& context) {
  return {NlCode(err), context + ": " + nl_geterror(err)};
}

NlAddrPtr ToNlAddr(const IpAddress& a, int prefix) {
  NlAddrPtr out(
      nl_addr_build(a.family == Family::kV4 ? AF_INET : AF_INET6, a.bytes.data(), a.size()));
  if (out) nl_addr_set_prefixlen(out.get(), prefix);
  return out;
}

absl::StatusOr<int> ParseInt(std::string_view s, int lo, int hi) {
  int v = -1;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) {
    return absl::InvalidArgumentError("not an integer in " + std::to_string(lo) + ".." +
                                      std::to_string(hi));
  }
  return v;
}

}  // namespace

absl::StatusOr<MacAddress> ParseMac(const std::string& text) {
  MacAddress mac{};
  if (text.size() != 17) return absl::InvalidArgumentError("invalid MAC address \"" + text + "\"");
  for (size_t i = 0; i < 6; ++i) {
    if (i < 5 && text[i * 3 + 2] != ':')
      return absl::InvalidArgumentError("invalid MAC address \"" + text + "\"");
    unsigned v = 0;
    auto [end, ec] = std::from_chars(text.data() + i * 3, text.data() + i * 3 + 2, v, 16);
    if (ec != std::errc() || end != text.data() + i * 3 + 2) {
      return absl::InvalidArgumentError("invalid MAC address \"" + text + "\"");
    }
    mac[i] = static_cast<uint8_t>(v);
  }
  return mac;
}

absl::StatusOr<InterfaceAddress> InterfaceAddress::Parse(const std::string& text) {
  const size_t slash = text.find('/');
  if (slash == std::string::npos) {
    return absl::InvalidArgumentError("interface address \"" + text + "\" needs a /prefix");
  }
  auto addr = IpAddress::Parse(std::string_view(text).substr(0, slash));
  if (!addr.ok()) return addr.status();
  auto prefix = ParseInt(std::string_view(text).substr(slash + 1), 0, addr->max_prefix());
  if (!prefix.ok())
    return absl::InvalidArgumentError("interface address \"" + text + "\": bad prefix");
  return InterfaceAddress{*addr, *prefix};
}

absl::StatusOr<UniqueFd> CreateTap(int netns_fd, const TapOptions& o) {
  FORKD_RETURN_IF_ERROR(ValidateName("tap", o.name, IFNAMSIZ - 1));
  const std::string ctx = "create tap " + o.name;
  UniqueFd fd;
  {
    // The tap joins the namespace of the thread that opens /dev/net/tun.
    FORKD_ASSIGN_OR_RETURN(NetnsGuard guard, NetnsGuard::Enter(netns_fd));
    fd.reset(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!fd) return ErrnoStatus(errno, ctx + ": open /dev/net/tun");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, o.name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (o.vnet_hdr ? IFF_VNET_HDR : 0);
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return ErrnoStatus(errno, ctx + ": TUNSETIFF");
  }
  if (o.owner && ::ioctl(fd.get(), TUNSETOWNER, static_cast<unsigned long>(*o.owner)) != 0) {
    return ErrnoStatus(errno, ctx + ": TUNSETOWNER");
  }
  if (o.group && ::ioctl(fd.get(), TUNSETGROUP, static_cast<unsigned long>(*o.group)) != 0) {
    return ErrnoStatus(errno, ctx + ": TUNSETGROUP");
  }
  if (o.persistent && ::ioctl(fd.get(), TUNSETPERSIST, 1UL) != 0) {
    return ErrnoStatus(errno, ctx + ": TUNSETPERSIST");
  }
  return fd;
}

absl::StatusOr<RtNetlink> RtNetlink::Open(int netns_fd) {
  FORKD_ASSIGN_OR_RETURN(NetnsGuard guard, NetnsGuard::Enter(netns_fd));
  nl_sock* sock = nl_socket_alloc();
  if (sock == nullptr) return absl::ResourceExhaustedError("nl_socket_alloc failed");
  RtNetlink rt(sock);
  if (int err = nl_connect(sock, NETLINK_ROUTE); err < 0)
    return NlStatus(err, "connect NETLINK_ROUTE");
  return rt;
}

RtNetlink::RtNetlink(RtNetlink&& o) noexcept : sock_(std::exchange(o.sock_, nullptr)) {}
RtNetlink& RtNetlink::operator=(RtNetlink&& o) noexcept {
  if (this != &o) {
    if (sock_ != nullptr) nl_socket_free(sock_);
    sock_ = std::exchange(o.sock_, nullptr);
  }
  return *this;
}
RtNetlink::~RtNetlink() {
  if (sock_ != nullptr) nl_socket_free(sock_);  // closes the socket too
}

absl::Status RtNetlink::CreateVethPair(const std::string& name, const std::string& peer,
                                       int peer_netns_fd) {
  FORKD_RETURN_IF_ERROR(ValidateName("veth", name, IFNAMSIZ - 1));
  FORKD_RETURN_IF_ERROR(ValidateName("veth peer", peer, IFNAMSIZ - 1));
  LinkPtr link(rtnl_link_veth_alloc());
  if (!link) return absl::ResourceExhaustedError("rtnl_link_veth_alloc failed");
  rtnl_link_set_name(link.get(), name.c_str());
  LinkPtr peer_link(rtnl_link_veth_get_peer(link.get()));
  rtnl_link_set_name(peer_link.get(), peer.c_str());
  if (peer_netns_fd >= 0) rtnl_link_set_ns_fd(peer_link.get(), peer_netns_fd);
  if (int err = rtnl_link_add(sock_, link.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    return NlStatus(err, "create veth pair " + name + "/" + peer);
  }
  return absl::OkStatus();
}

absl::Status RtNetlink::DeleteLink(const std::string& name) {
  LinkPtr link(rtnl_link_alloc());
  rtnl_link_set_name(link.get(), name.c_str());
  if (int err = rtnl_link_delete(sock_, link.get()); err < 0)
    return NlStatus(err, "delete link " + name);
  return absl::OkStatus();
}

absl::Status RtNetlink::ChangeLink(const std::string& name, const std::string& what,
                                   void (*apply)(rtnl_link*, const void*), const void* arg) {
  rtnl_link* raw = nullptr;
  if (int err = rtnl_link_get_kernel(sock_, 0, name.c_str(), &raw); err < 0) {
    return NlStatus(err, what + " " + name);
  }
  LinkPtr orig(raw);
  LinkPtr change(rtnl_link_alloc());
  apply(change.get(), arg);
  if (int err = rtnl_link_change(sock_, orig.get(), change.get(), 0); err < 0) {
    return NlStatus(err, what + " " + name);
  }
  return absl::OkStatus();
}

absl::Status RtNetlink::MoveToNetns(const std::string& name, int netns_fd) {
  return ChangeLink(
      name, "move to netns",
      [](rtnl_link* c, const void* arg) { rtnl_link_set_ns_fd(c, *static_cast<const int*>(arg)); },
      &netns_fd);
}

absl::Status RtNetlink::SetUp(const std::string& name) {
  return ChangeLink(
      name, "set up", [](rtnl_link* c, const void*) { rtnl_link_set_flags(c, IFF_UP); }, nullptr);
}

absl::Status RtNetlink::SetMac(const std::string& name, const MacAddress& mac) {
  return ChangeLink(
      name, "set MAC of",
      [](rtnl_link* c, const void* arg) {
        const auto* m = static_cast<const MacAddress*>(arg);
        NlAddrPtr a(nl_addr_build(AF_LLC, m->data(), m->size()));
        rtnl_link_set_addr(c, a.get());
      },
      &mac);
}

absl::Status RtNetlink::AddAddress(const std::string& name, const InterfaceAddress& address) {
  FORKD_ASSIGN_OR_RETURN(int ifindex, IfIndex(name));
  AddrPtr addr(rtnl_addr_alloc());
  NlAddrPtr local = ToNlAddr(address.address, address.prefix);
  rtnl_addr_set_ifindex(addr.get(), ifindex);
  if (int err = rtnl_addr_set_local(addr.get(), local.get()); err < 0) {
    return NlStatus(err, "add address to " + name);
  }
  if (int err = rtnl_addr_add(sock_, addr.get(), 0); err < 0) {
    return NlStatus(err, "add address " + address.address.ToString() + "/" +
                             std::to_string(address.prefix) + " to " + name);
  }
  return absl::OkStatus();
}

absl::Status RtNetlink::AddRoute(const Cidr& destination, const std::optional<IpAddress>& gateway,
                                 const std::optional<std::string>& device) {
  const std::string ctx = "add route to " + destination.ToString();
  if (!gateway && !device) return absl::InvalidArgumentError(ctx + ": needs a gateway or a device");
  RoutePtr route(rtnl_route_alloc());
  const int family = destination.family() == Family::kV4 ? AF_INET : AF_INET6;
  rtnl_route_set_family(route.get(), static_cast<uint8_t>(family));
  NlAddrPtr dst = ToNlAddr(destination.address, destination.prefix);
  if (int err = rtnl_route_set_dst(route.get(), dst.get()); err < 0) return NlStatus(err, ctx);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  if (gateway) {
    NlAddrPtr gw = ToNlAddr(*gateway, gateway->max_prefix());
    rtnl_route_nh_set_gateway(nh, gw.get());
  }
  if (device) {
    auto ifindex = IfIndex(*device);
    if (!ifindex.ok()) {
      rtnl_route_nh_free(nh);
      return Annotate(ifindex.status(), ctx);
    }
    rtnl_route_nh_set_ifindex(nh, *ifindex);
  }
  rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh now
  if (int err = rtnl_route_add(sock_, route.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    return NlStatus(err, ctx);
  }
  return absl::OkStatus();
}

absl::StatusOr<int> RtNetlink::IfIndex(const std::string& name) {
  rtnl_link* raw = nullptr;
  if (int err = rtnl_link_get_kernel(sock_, 0, name.c_str(), &raw); err < 0) {
    return NlStatus(err, "look up link " + name);
  }
  LinkPtr link(raw);
  return rtnl_link_get_ifindex(link.get());
}

absl::StatusOr<bool> RtNetlink::IsOperUp(const std::string& name) {
  rtnl_link* raw = nullptr;
  if (int err = rtnl_link_get_kernel(sock_, 0, name.c_str(), &raw); err < 0) {
    return NlStatus(err, "look up link " + name);
  }
  LinkPtr link(raw);
  return rtnl_link_get_operstate(link.get()) == kOperUp;
}

bool RtNetlink::LinkExists(const std::string& name) { return IfIndex(name).ok(); }

}  // namespace forkd::netfilter
