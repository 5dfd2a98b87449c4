#include "agent/netconfig.h"

#include <arpa/inet.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>

#include <cerrno>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/netlink.h"
#include "common/errno_status.h"

namespace forkd::agent {
namespace {

// Splits "addr/len" and parses both halves for `family`.
template <typename Addr>
absl::Status ParseCidr(const std::string& text, int family, int max_len, Addr* addr, uint8_t* len) {
  const auto slash = text.find('/');
  if (slash == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not addr/prefix"));
  }
  const std::string host = text.substr(0, slash);
  const std::string bits = text.substr(slash + 1);
  if (::inet_pton(family, host.c_str(), addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("'", host, "' is not an address"));
  }
  int n = 0;
  if (bits.empty() || bits.size() > 3) {
    return absl::InvalidArgumentError(absl::StrCat("bad prefix length in '", text, "'"));
  }
  for (char c : bits) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(absl::StrCat("bad prefix length in '", text, "'"));
    }
    n = n * 10 + (c - '0');
  }
  if (n > max_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefix length ", n, " out of range in '", text, "'"));
  }
  *len = static_cast<uint8_t>(n);
  return absl::OkStatus();
}

absl::StatusOr<std::array<uint8_t, 6>> ParseMac(const std::string& text) {
  std::array<uint8_t, 6> mac{};
  unsigned int b[6];
  char trailing = 0;
  if (text.size() != 17 || std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1],
                                       &b[2], &b[3], &b[4], &b[5], &trailing) != 6) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a MAC address"));
  }
  for (int i = 0; i < 6; ++i) mac[i] = static_cast<uint8_t>(b[i]);
  if (mac[0] & 1) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is a multicast MAC address"));
  }
  return mac;
}

class RtnetlinkConfigurator : public NetConfigurator {
 public:
  explicit RtnetlinkConfigurator(std::string ifname) : ifname_(std::move(ifname)) {}

  absl::Status Apply(const NetworkConfig& config) override {
    const unsigned index = ::if_nametoindex(ifname_.c_str());
    if (index == 0) return ErrnoStatus(errno, absl::StrCat("if_nametoindex ", ifname_));
    FORKD_ASSIGN_OR_RETURN(NetlinkSocket nl, NetlinkSocket::Open());
    const int ifindex = static_cast<int>(index);

    FORKD_RETURN_IF_ERROR(SetFlags(nl, ifindex, 0, "link down"));
    if (config.mac) {
      NetlinkMessage msg(RTM_NEWLINK, 0);
      msg.AddHeader(ifinfomsg{.ifi_family = AF_UNSPEC, .ifi_index = ifindex});
      msg.AddAttr(IFLA_ADDRESS, config.mac->data(), config.mac->size());
      FORKD_RETURN_IF_ERROR(nl.Request(msg, absl::StrCat("set MAC of ", ifname_)));
    }
    FORKD_RETURN_IF_ERROR(SetFlags(nl, ifindex, IFF_UP, "link up"));
    FORKD_RETURN_IF_ERROR(FlushGlobalAddresses(nl, ifindex));
    if (config.ipv4) {
      FORKD_RETURN_IF_ERROR(
          AddAddress(nl, ifindex, AF_INET, &config.ipv4->addr, 4, config.ipv4->prefix_len));
    }
    if (config.ipv6) {
      FORKD_RETURN_IF_ERROR(
          AddAddress(nl, ifindex, AF_INET6, &config.ipv6->addr, 16, config.ipv6->prefix_len));
    }
    if (config.ipv4_gateway) {
      FORKD_RETURN_IF_ERROR(ReplaceDefaultRoute(nl, ifindex, AF_INET, &*config.ipv4_gateway, 4));
    }
    if (config.ipv6_gateway) {
      FORKD_RETURN_IF_ERROR(ReplaceDefaultRoute(nl, ifindex, AF_INET6, &*config.ipv6_gateway, 16));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status SetFlags(NetlinkSocket& nl, int ifindex, unsigned flags, std::string_view what) {
    NetlinkMessage msg(RTM_NEWLINK, 0);
    msg.AddHeader(ifinfomsg{
        .ifi_family = AF_UNSPEC, .ifi_index = ifindex, .ifi_flags = flags, .ifi_change = IFF_UP});
    return nl.Request(msg, absl::StrCat(std::string(what), " ", ifname_));
  }

  // Removes every address except link-local/host scope ones (the kernel owns
  // the IPv6 link-local address; removing it would only break neighbour discovery).
  absl::Status FlushGlobalAddresses(NetlinkSocket& nl, int ifindex) {
    struct Found {
      ifaddrmsg hdr;
      std::vector<char> local;
    };
    std::vector<Found> found;
    NetlinkMessage dump(RTM_GETADDR, 0);
    dump.AddHeader(ifaddrmsg{.ifa_family = AF_UNSPEC});
    FORKD_RETURN_IF_ERROR(
        nl.Dump(dump, absl::StrCat("list addresses of ", ifname_), [&](const nlmsghdr& h) {
          if (h.nlmsg_type != RTM_NEWADDR) return;
          const auto* ifa = static_cast<const ifaddrmsg*>(NLMSG_DATA(&h));
          if (static_cast<int>(ifa->ifa_index) != ifindex) return;
          if (ifa->ifa_scope == RT_SCOPE_LINK || ifa->ifa_scope == RT_SCOPE_HOST) return;
          Found f{.hdr = *ifa, .local = {}};
          int len = static_cast<int>(IFA_PAYLOAD(&h));
          for (auto* a = IFA_RTA(ifa); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
            // IFA_LOCAL is the interface's own address for IPv4 (IFA_ADDRESS
            // is the peer on point-to-point links); IPv6 has only IFA_ADDRESS.
            if (a->rta_type == IFA_LOCAL || (a->rta_type == IFA_ADDRESS && f.local.empty())) {
              const auto* p = static_cast<const char*>(RTA_DATA(a));
              f.local.assign(p, p + RTA_PAYLOAD(a));
            }
          }
          if (!f.local.empty()) found.push_back(std::move(f));
        }));
    for (const Found& f : found) {
      NetlinkMessage del(RTM_DELADDR, 0);
      del.AddHeader(f.hdr);
      del.AddAttr(IFA_LOCAL, f.local.data(), f.local.size());
      FORKD_RETURN_IF_ERROR(nl.Request(del, absl::StrCat("delete address on ", ifname_)));
    }
    return absl::OkStatus();
  }

  absl::Status AddAddress(NetlinkSocket& nl, int ifindex, int family, const void* addr,
                          size_t addr_len, uint8_t prefix_len) {
    NetlinkMessage msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
    msg.AddHeader(ifaddrmsg{.ifa_family = static_cast<unsigned char>(family),
                            .ifa_prefixlen = prefix_len,
                            .ifa_scope = RT_SCOPE_UNIVERSE,
                            .ifa_index = static_cast<unsigned>(ifindex)});
    msg.AddAttr(IFA_LOCAL, addr, addr_len);
    msg.AddAttr(IFA_ADDRESS, addr, addr_len);
    if (family == AF_INET6) msg.AddAttrValue<uint32_t>(IFA_FLAGS, IFA_F_NODAD);
    char text[INET6_ADDRSTRLEN] = "?";
    ::inet_ntop(family, addr, text, sizeof(text));
    return nl.Request(msg, absl::StrCat("add address ", text, "/", prefix_len, " to ", ifname_));
  }

  absl::Status ReplaceDefaultRoute(NetlinkSocket& nl, int ifindex, int family, const void* gw,
                                   size_t gw_len) {
    NetlinkMessage msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
    msg.AddHeader(rtmsg{.rtm_family = static_cast<unsigned char>(family),
                        .rtm_dst_len = 0,
                        .rtm_table = RT_TABLE_MAIN,
                        .rtm_protocol = RTPROT_STATIC,
                        .rtm_scope = RT_SCOPE_UNIVERSE,
                        .rtm_type = RTN_UNICAST});
    msg.AddAttr(RTA_GATEWAY, gw, gw_len);
    msg.AddAttrValue<uint32_t>(RTA_OIF, static_cast<uint32_t>(ifindex));
    char text[INET6_ADDRSTRLEN] = "?";
    ::inet_ntop(family, gw, text, sizeof(text));
    return nl.Request(msg, absl::StrCat("replace default route via ", text, " on ", ifname_));
  }

  std::string ifname_;
};

}  // namespace

absl::StatusOr<NetworkConfig> ParseNetwork(const v1::Network& net) {
  NetworkConfig c;
  if (!net.ipv4_cidr().empty()) {
    Ipv4Prefix p;
    FORKD_RETURN_IF_ERROR(
        Annotate(ParseCidr(net.ipv4_cidr(), AF_INET, 32, &p.addr, &p.prefix_len), "ipv4_cidr"));
    c.ipv4 = p;
  }
  if (!net.ipv6_cidr().empty()) {
    Ipv6Prefix p;
    FORKD_RETURN_IF_ERROR(
        Annotate(ParseCidr(net.ipv6_cidr(), AF_INET6, 128, &p.addr, &p.prefix_len), "ipv6_cidr"));
    c.ipv6 = p;
  }
  if (!net.ipv4_gateway().empty()) {
    in_addr gw{};
    if (::inet_pton(AF_INET, net.ipv4_gateway().c_str(), &gw) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("ipv4_gateway: '", net.ipv4_gateway(), "' is not an IPv4 address"));
    }
    if (!c.ipv4) return absl::InvalidArgumentError("ipv4_gateway given without ipv4_cidr");
    c.ipv4_gateway = gw;
  }
  if (!net.ipv6_gateway().empty()) {
    in6_addr gw{};
    if (::inet_pton(AF_INET6, net.ipv6_gateway().c_str(), &gw) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("ipv6_gateway: '", net.ipv6_gateway(), "' is not an IPv6 address"));
    }
    if (!c.ipv6) return absl::InvalidArgumentError("ipv6_gateway given without ipv6_cidr");
    c.ipv6_gateway = gw;
  }
  if (!net.mac().empty()) {
    FORKD_ASSIGN_OR_RETURN(auto mac, ParseMac(net.mac()));
    c.mac = mac;
  }
  return c;
}

std::unique_ptr<NetConfigurator> MakeRtnetlinkConfigurator(std::string ifname) {
  return std::make_unique<RtnetlinkConfigurator>(std::move(ifname));
}

absl::Status SetLinkUp(const std::string& ifname) {
  const unsigned index = ::if_nametoindex(ifname.c_str());
  if (index == 0) return ErrnoStatus(errno, absl::StrCat("if_nametoindex ", ifname));
  FORKD_ASSIGN_OR_RETURN(NetlinkSocket nl, NetlinkSocket::Open());
  NetlinkMessage msg(RTM_NEWLINK, 0);
  msg.AddHeader(ifinfomsg{.ifi_family = AF_UNSPEC,
                          .ifi_index = static_cast<int>(index),
                          .ifi_flags = IFF_UP,
                          .ifi_change = IFF_UP});
  return nl.Request(msg, absl::StrCat("link up ", ifname));
}

}  // namespace forkd::agent
