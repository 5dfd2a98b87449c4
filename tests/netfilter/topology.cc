#include "tests/netfilter/topology.h"

#include <chrono>
#include <thread>

#include "common/errno_status.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "tests/netfilter/netns_sockets.h"

namespace forkd::testing {
namespace {

using netfilter::Cidr;
using netfilter::InterfaceAddress;
using netfilter::IpAddress;
using netfilter::RtNetlink;

// A new veth drops what it transmits until the kernel's link watcher has
// activated it (up to a second later); wait for that instead of losing the
// first packets of a test.
absl::Status WaitUp(RtNetlink& rt, const std::string& dev) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    FORKD_ASSIGN_OR_RETURN(bool up, rt.IsOperUp(dev));
    if (up) return absl::OkStatus();
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError("link " + dev + " did not come up");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

absl::Status AddAddr(RtNetlink& rt, const std::string& dev, const std::string& addr) {
  return rt.AddAddress(dev, *InterfaceAddress::Parse(addr));
}

}  // namespace

const std::vector<std::string>& PrivateHosts() {
  static const std::vector<std::string> hosts = {"10.50.0.10", "172.16.0.10", "192.168.0.10",
                                                 "100.64.0.10"};
  return hosts;
}

absl::StatusOr<Topology> Topology::Create(int guest_count) {
  Topology t;
  FORKD_ASSIGN_OR_RETURN(t.pod, netfilter::CreateNetns());
  FORKD_ASSIGN_OR_RETURN(t.internet, netfilter::CreateNetns());
  // Forwarding on, reverse-path filtering off: the tests must prove that the
  // nftables rules, not rp_filter, stop spoofed packets.
  FORKD_RETURN_IF_ERROR(WriteSysctl(t.pod.get(), "net/ipv4/ip_forward", "1"));
  FORKD_RETURN_IF_ERROR(WriteSysctl(t.pod.get(), "net/ipv4/conf/all/rp_filter", "0"));
  FORKD_RETURN_IF_ERROR(WriteSysctl(t.pod.get(), "net/ipv4/conf/default/rp_filter", "0"));
  FORKD_RETURN_IF_ERROR(WriteSysctl(t.pod.get(), "net/ipv6/conf/all/forwarding", "1"));
  // No duplicate address detection: addresses are usable at once.
  for (int ns : {t.pod.get(), t.internet.get()}) {
    FORKD_RETURN_IF_ERROR(WriteSysctl(ns, "net/ipv6/conf/default/accept_dad", "0"));
  }

  FORKD_ASSIGN_OR_RETURN(RtNetlink pod, RtNetlink::Open(t.pod.get()));
  FORKD_ASSIGN_OR_RETURN(RtNetlink inet, RtNetlink::Open(t.internet.get()));
  FORKD_RETURN_IF_ERROR(pod.SetUp("lo"));
  FORKD_RETURN_IF_ERROR(inet.SetUp("lo"));
  FORKD_RETURN_IF_ERROR(pod.CreateVethPair(kUplink, "inet0", t.internet.get()));
  FORKD_RETURN_IF_ERROR(AddAddr(pod, kUplink, std::string(kUplinkAddress) + "/30"));
  FORKD_RETURN_IF_ERROR(pod.SetUp(kUplink));
  FORKD_RETURN_IF_ERROR(AddAddr(inet, "inet0", "198.18.0.2/30"));
  FORKD_RETURN_IF_ERROR(AddAddr(pod, kUplink, "2001:db8:ffff::1/64"));
  FORKD_RETURN_IF_ERROR(AddAddr(inet, "inet0", "2001:db8:ffff::2/64"));
  FORKD_RETURN_IF_ERROR(inet.SetUp("inet0"));
  FORKD_RETURN_IF_ERROR(WaitUp(pod, kUplink));
  FORKD_RETURN_IF_ERROR(WaitUp(inet, "inet0"));
  std::vector<std::string> hosts = {kAllowedHost, kAnyPortHost, kOtherHost, kMetadataHost};
  hosts.insert(hosts.end(), PrivateHosts().begin(), PrivateHosts().end());
  for (const std::string& h : hosts) FORKD_RETURN_IF_ERROR(AddAddr(inet, "inet0", h + "/32"));
  for (const char* h : {kAllowedHost6, kOtherHost6, kMetadataHost6}) {
    FORKD_RETURN_IF_ERROR(AddAddr(inet, "inet0", std::string(h) + "/128"));
  }
  FORKD_RETURN_IF_ERROR(pod.AddRoute(*Cidr::Parse("::/0"),
                                     IpAddress::Parse("2001:db8:ffff::2").value(), std::nullopt));
  FORKD_RETURN_IF_ERROR(pod.AddRoute(*Cidr::Parse("0.0.0.0/0"),
                                     IpAddress::Parse("198.18.0.2").value(), std::nullopt));
  // Lets the internet side try unsolicited connections to guests.
  FORKD_RETURN_IF_ERROR(inet.AddRoute(*Cidr::Parse("10.200.0.0/16"),
                                      IpAddress::Parse("198.18.0.1").value(), std::nullopt));

  for (int i = 0; i < guest_count; ++i) {
    GuestLink g;
    FORKD_ASSIGN_OR_RETURN(g.ns, netfilter::CreateNetns());
    const std::string net = "10.200." + std::to_string(i) + ".";
    g.tap = "sbt" + std::to_string(i);
    g.guest_ip = net + "2";
    g.spoof_ip = net + "4";
    g.gateway = net + "1";
    FORKD_RETURN_IF_ERROR(WriteSysctl(g.ns.get(), "net/ipv6/conf/default/accept_dad", "0"));
    g.guest_ip6 = "fd42:" + std::to_string(i) + "::2";
    g.spoof_ip6 = "fd42:" + std::to_string(i) + "::4";
    g.gateway6 = "fd42:" + std::to_string(i) + "::1";
    FORKD_ASSIGN_OR_RETURN(RtNetlink guest, RtNetlink::Open(g.ns.get()));
    FORKD_RETURN_IF_ERROR(guest.SetUp("lo"));
    FORKD_RETURN_IF_ERROR(pod.CreateVethPair(g.tap, "eth0", g.ns.get()));
    FORKD_RETURN_IF_ERROR(AddAddr(pod, g.tap, g.gateway + "/29"));
    FORKD_RETURN_IF_ERROR(AddAddr(pod, g.tap, std::string(kResolver) + "/32"));
    FORKD_RETURN_IF_ERROR(AddAddr(pod, g.tap, g.gateway6 + "/64"));
    FORKD_RETURN_IF_ERROR(pod.SetUp(g.tap));
    FORKD_RETURN_IF_ERROR(AddAddr(guest, "eth0", g.guest_ip + "/29"));
    FORKD_RETURN_IF_ERROR(AddAddr(guest, "eth0", g.guest_ip6 + "/64"));
    FORKD_RETURN_IF_ERROR(guest.SetUp("eth0"));
    FORKD_RETURN_IF_ERROR(
        guest.AddRoute(*Cidr::Parse("::/0"), IpAddress::Parse(g.gateway6).value(), std::nullopt));
    FORKD_RETURN_IF_ERROR(guest.AddRoute(*Cidr::Parse("0.0.0.0/0"),
                                         IpAddress::Parse(g.gateway).value(), std::nullopt));
    FORKD_RETURN_IF_ERROR(WaitUp(pod, g.tap));
    FORKD_RETURN_IF_ERROR(WaitUp(guest, "eth0"));
    t.guests.push_back(std::move(g));
  }
  return t;
}

}  // namespace forkd::testing
