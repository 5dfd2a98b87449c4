// RtnetlinkConfigurator against a real interface, inside a network namespace
// this test creates on a dedicated thread (unshare(CLONE_NEWNET) changes only
// that thread): the machine's own namespace is never touched.
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <set>
#include <string>
#include <thread>

#include "agent/netconfig.h"
#include "agent/tests/test_util.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::agent {
namespace {

// The interface's addresses as "addr/prefix" strings, from getifaddrs (which
// asks netlink in the calling thread's namespace).
std::set<std::string> Addresses(const char* ifname) {
  std::set<std::string> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) {
    ADD_FAILURE() << "getifaddrs: " << std::strerror(errno);
    return out;
  }
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || std::string(i->ifa_name) != ifname) continue;
    const int family = i->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    char text[INET6_ADDRSTRLEN] = {};
    const void* addr =
        family == AF_INET
            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr)
            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr);
    ::inet_ntop(family, addr, text, sizeof(text));
    if (std::string(text).rfind("fe80:", 0) == 0) continue;  // kernel-owned link-local
    int prefix = 0;
    const auto* mask = reinterpret_cast<const unsigned char*>(
        family == AF_INET
            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(i->ifa_netmask)->sin_addr)
            : static_cast<const void*>(
                  &reinterpret_cast<sockaddr_in6*>(i->ifa_netmask)->sin6_addr));
    for (int b = 0; b < (family == AF_INET ? 4 : 16); ++b) prefix += __builtin_popcount(mask[b]);
    out.insert(std::string(text) + "/" + std::to_string(prefix));
  }
  ::freeifaddrs(list);
  return out;
}

std::string Mac(const char* ifname) {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFHWADDR, &ifr) != 0) return "error";
  char text[18];
  const auto* m = reinterpret_cast<const unsigned char*>(ifr.ifr_hwaddr.sa_data);
  (void)std::snprintf(text, sizeof(text), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3],
                      m[4], m[5]);
  return text;
}

// The default routes of this thread's namespace, as "gateway dev" lines.
std::string DefaultRoutes() {
  // /proc/thread-self: /proc/self/net would show the main thread's namespace.
  std::string v4 = testing::ReadAll("/proc/thread-self/net/route");
  std::string v6 = testing::ReadAll("/proc/thread-self/net/ipv6_route");
  std::string out;
  std::istringstream l4(v4);
  std::string line;
  std::getline(l4, line);  // header; the gateway column is little-endian hex
  while (std::getline(l4, line)) {
    std::istringstream f(line);
    std::string dev, dst, gw;
    f >> dev >> dst >> gw;
    if (dst == "00000000") out.append("v4 ").append(gw).append(" ").append(dev).append("\n");
  }
  std::istringstream l6(v6);
  while (std::getline(l6, line)) {
    std::istringstream f(line);
    std::string dst, dst_len, src, src_len, gw, metric, ref, use, flags, dev;
    f >> dst >> dst_len >> src >> src_len >> gw >> metric >> ref >> use >> flags >> dev;
    if (dst == std::string(32, '0') && dst_len == "00" && gw != std::string(32, '0')) {
      out.append("v6 ").append(gw).append(" ").append(dev).append("\n");
    }
  }
  return out;
}

// Runs `body` on a new thread inside a fresh network namespace holding a tap
// device named eth0 (tap, because this kernel may lack the dummy driver).
void InFreshNetns(const std::function<void()>& body) {
  std::thread([&] {
    ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << std::strerror(errno);
    UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(tun.valid()) << "/dev/net/tun: " << std::strerror(errno);
    ifreq ifr{};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    std::strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    ASSERT_EQ(::ioctl(tun.get(), TUNSETIFF, &ifr), 0) << "TUNSETIFF: " << std::strerror(errno);
    body();
  }).join();
}

v1::Network Net(const std::string& v4, const std::string& gw4, const std::string& mac) {
  v1::Network n;
  n.set_ipv4_cidr(v4);
  n.set_ipv4_gateway(gw4);
  n.set_ipv6_cidr("fd00::2/64");
  n.set_ipv6_gateway("fd00::1");
  n.set_mac(mac);
  return n;
}

TEST(NetconfigNetnsTest, AddressesTheNicAndReplacesWhatWasThere) {
  InFreshNetns([] {
    auto nic = MakeRtnetlinkConfigurator("eth0");

    auto first = ParseNetwork(Net("10.0.0.2/30", "10.0.0.1", "02:00:0a:00:00:02"));
    ASSERT_TRUE(first.ok()) << first.status();
    auto s = nic->Apply(*first);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(Addresses("eth0"), (std::set<std::string>{"10.0.0.2/30", "fd00::2/64"}));
    EXPECT_EQ(Mac("eth0"), "02:00:0a:00:00:02");
    EXPECT_EQ(DefaultRoutes(), "v4 0100000A eth0\nv6 fd000000000000000000000000000001 eth0\n");

    // A second fork's identity: the old address must be gone, not kept beside.
    auto second = ParseNetwork(Net("10.0.1.6/24", "10.0.1.1", "02:00:0a:00:01:06"));
    ASSERT_TRUE(second.ok()) << second.status();
    s = nic->Apply(*second);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(Addresses("eth0"), (std::set<std::string>{"10.0.1.6/24", "fd00::2/64"}));
    EXPECT_EQ(Mac("eth0"), "02:00:0a:00:01:06");
    EXPECT_EQ(DefaultRoutes(), "v4 0101000A eth0\nv6 fd000000000000000000000000000001 eth0\n");
  });
}

TEST(NetconfigNetnsTest, MissingInterfaceIsReported) {
  InFreshNetns([] {
    auto nic = MakeRtnetlinkConfigurator("nosuch0");
    auto config = ParseNetwork(Net("10.0.0.2/30", "10.0.0.1", "02:00:0a:00:00:02"));
    ASSERT_TRUE(config.ok());
    const auto s = nic->Apply(*config);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("nosuch0"), absl::string_view::npos) << s;
  });
}

TEST(NetconfigNetnsTest, BringsLoopbackUp) {
  InFreshNetns([] {
    const auto s = SetLinkUp("lo");
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(Addresses("lo"), (std::set<std::string>{"127.0.0.1/8", "::1/128"}));
  });
}

}  // namespace
}  // namespace forkd::agent
