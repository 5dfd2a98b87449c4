// Tier 1: the datapath against a guest that attacks it, with real packets in
// namespaces the test creates (topology.h). The guest sends what an attacker
// would (source-routed packets, traffic on a revoked flow, traffic from a tap
// whose fence was removed, metadata in every spelling); every "dropped" has a
// positive control on the same path showing it works when policy allows.
//
// The pod namespace's kernel settings are turned the WRONG way in SetUp
// (source routing, segment routing, RPL, redirects accepted), so what holds
// here holds by the ruleset alone.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nft_text.h"
#include "netfilter/nftables.h"
#include "netfilter/sysctl.h"
#include "tests/netfilter/netns_sockets.h"
#include "tests/netfilter/topology.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::testing {
namespace {

using netfilter::AllowRule;
using netfilter::Cidr;
using netfilter::EgressMode;
using netfilter::IpAddress;
using netfilter::Nftables;
using netfilter::Protocol;
using netfilter::SkeletonConfig;
using netfilter::TapPolicy;

constexpr uint16_t kUdpPort = 7000;

// --- packet building --------------------------------------------------------

std::array<uint8_t, 16> Addr(const std::string& text) { return IpAddress::Parse(text)->bytes; }

void Put16(std::vector<uint8_t>& p, size_t at, uint16_t v) {
  p[at] = static_cast<uint8_t>(v >> 8);
  p[at + 1] = static_cast<uint8_t>(v);
}

uint16_t Checksum(const std::vector<uint8_t>& data, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < data.size(); i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.size() % 2 != 0) sum += data.back() << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

std::vector<uint8_t> Udp(uint16_t dport, const std::string& payload) {
  std::vector<uint8_t> u(8 + payload.size());
  Put16(u, 0, 40000);
  Put16(u, 2, dport);
  Put16(u, 4, static_cast<uint16_t>(u.size()));
  std::copy(payload.begin(), payload.end(), u.begin() + 8);
  return u;
}

// IPv4 + `options` (a multiple of 4 bytes) + UDP (checksum 0: none, legal for IPv4).
std::vector<uint8_t> Ipv4Udp(const std::string& src, const std::string& dst, uint16_t dport,
                             const std::string& payload, const std::vector<uint8_t>& options = {}) {
  const std::vector<uint8_t> udp = Udp(dport, payload);
  std::vector<uint8_t> p(20 + options.size());
  p[0] = static_cast<uint8_t>(0x40 | (p.size() / 4));
  Put16(p, 2, static_cast<uint16_t>(p.size() + udp.size()));
  p[8] = 64;
  p[9] = IPPROTO_UDP;
  std::copy_n(Addr(src).begin(), 4, p.begin() + 12);
  std::copy_n(Addr(dst).begin(), 4, p.begin() + 16);
  std::copy(options.begin(), options.end(), p.begin() + 20);
  Put16(p, 10, Checksum(p));
  p.insert(p.end(), udp.begin(), udp.end());
  return p;
}

// A loose source route that has already been followed (pointer past its one
// address), and a record-route option: both are "options".
std::vector<uint8_t> LooseSourceRoute(const std::string& hop) {
  std::vector<uint8_t> o = {0x83, 7, 8};
  const auto address = Addr(hop);
  o.insert(o.end(), address.begin(), address.begin() + 4);
  o.push_back(0);  // end of options, padding to 8 bytes
  return o;
}
std::vector<uint8_t> RecordRoute() { return {0x07, 7, 4, 0, 0, 0, 0, 0}; }

// IPv6 + an optional extension header + UDP. `ext_type`: 43 (routing, of
// `routing_type`, segments left 0, one address) or 60 (destination options,
// padding only) or 0 for none.
std::vector<uint8_t> Ipv6Udp(const std::string& src, const std::string& dst, uint16_t dport,
                             const std::string& payload, uint8_t ext_type = 0,
                             uint8_t routing_type = 0) {
  std::vector<uint8_t> udp = Udp(dport, payload);
  // Checksum over the pseudo-header (the final destination: segments left is 0).
  std::vector<uint8_t> pseudo;
  for (const std::string* a : {&src, &dst}) {
    const auto b = Addr(*a);
    pseudo.insert(pseudo.end(), b.begin(), b.end());
  }
  pseudo.insert(pseudo.end(), {0, 0, static_cast<uint8_t>(udp.size() >> 8),
                               static_cast<uint8_t>(udp.size()), 0, 0, 0, IPPROTO_UDP});
  pseudo.insert(pseudo.end(), udp.begin(), udp.end());
  uint16_t sum = Checksum(pseudo);
  Put16(udp, 6, sum == 0 ? 0xffff : sum);

  std::vector<uint8_t> ext;
  if (ext_type == IPPROTO_ROUTING) {
    ext = {IPPROTO_UDP, 2, routing_type, 0, 0, 0, 0, 0};
    const auto hop = Addr(dst);
    ext.insert(ext.end(), hop.begin(), hop.end());
  } else if (ext_type == IPPROTO_DSTOPTS) {
    ext = {IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0};  // PadN
  }
  std::vector<uint8_t> p(40);
  p[0] = 0x60;
  Put16(p, 4, static_cast<uint16_t>(ext.size() + udp.size()));
  p[6] = ext_type == 0 ? uint8_t{IPPROTO_UDP} : ext_type;
  p[7] = 64;
  std::copy_n(Addr(src).begin(), 16, p.begin() + 8);
  std::copy_n(Addr(dst).begin(), 16, p.begin() + 24);
  p.insert(p.end(), ext.begin(), ext.end());
  p.insert(p.end(), udp.begin(), udp.end());
  return p;
}

absl::StatusOr<std::string> ReadSysctl(int netns, const std::string& path) {
  auto guard = netfilter::NetnsGuard::Enter(netns);
  if (!guard.ok()) return guard.status();
  std::ifstream f("/proc/sys/" + path);
  std::string value;
  if (!(f >> value)) return absl::NotFoundError("read sysctl " + path);
  return value;
}

// --- fixture ------------------------------------------------------------------

class HardeningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = Topology::Create(2);
    ASSERT_OK(t.status());
    topo_ = std::move(*t);
    const int inet = topo_.internet.get();
    const int pod = topo_.pod.get();
    for (uint16_t port : {80, 443}) {
      listen4_[port] = Take(TcpListen(inet, "0.0.0.0", port));
    }
    listen6_ = Take(TcpListen(inet, "::", 443));
    udp4_ = Take(UdpBind(inet, "0.0.0.0", kUdpPort));
    udp6_ = Take(UdpBind(inet, "::", kUdpPort));
    resolver4_ = Take(UdpBind(pod, kResolver, 53));
    resolver6_ = Take(UdpBind(pod, G().gateway6, 53));
    keep_.push_back(Take(TcpListen(pod, G().gateway, 9091)));  // a pod listener
    keep_.push_back(Take(TcpListen(Guest(0), "0.0.0.0", 22)));

    // The kernel settings the wrong way: only the ruleset stands.
    for (const std::string dev : {"all", "sbt0"}) {
      for (const auto& [path, value] :
           {std::pair{"net/ipv4/conf/" + dev + "/accept_source_route", "1"},
            std::pair{"net/ipv4/conf/" + dev + "/accept_redirects", "1"},
            std::pair{"net/ipv6/conf/" + dev + "/accept_source_route", "1"},
            std::pair{"net/ipv6/conf/" + dev + "/seg6_enabled", "1"},
            std::pair{"net/ipv6/conf/" + dev + "/rpl_seg_enabled", "1"}}) {
        ASSERT_OK(WriteSysctl(pod, path, value));
      }
    }

    auto nft = Nftables::Open(pod);
    ASSERT_OK(nft.status());
    nft_.emplace(std::move(*nft));
    ASSERT_OK(nft_->EnsureSkeleton(Skeleton()));
    ASSERT_OK(nft_->AddTap(Policy()));
    ASSERT_OK(nft_->AddTap(Other()));
  }

  SkeletonConfig Skeleton() const {
    return {.uplink = kUplink,
            .guest_subnets = {*Cidr::Parse("10.200.0.0/16"), *Cidr::Parse("fd42::/16")}};
  }
  const GuestLink& G() const { return topo_.guests[0]; }
  int Guest(int i) const { return topo_.guests[i].ns.get(); }

  // Guest 0: any port on kAnyPortHost and kAllowedHost6, 443/tcp on
  // kAllowedHost, both resolvers.
  TapPolicy Policy() const {
    TapPolicy p;
    p.tap = G().tap;
    p.guest_v4 = *IpAddress::Parse(G().guest_ip);
    p.guest_v6 = *IpAddress::Parse(G().guest_ip6);
    p.resolvers = {*IpAddress::Parse(kResolver), *IpAddress::Parse(G().gateway6)};
    p.allow = {
        AllowRule{*Cidr::Parse(std::string(kAnyPortHost) + "/32"), Protocol::kAny, {}},
        AllowRule{*Cidr::Parse(std::string(kAllowedHost) + "/32"), Protocol::kTcp, {{443, 443}}},
        AllowRule{*Cidr::Parse(std::string(kAllowedHost6) + "/128"), Protocol::kAny, {}}};
    return p;
  }
  TapPolicy Other() const {
    TapPolicy p;
    p.tap = topo_.guests[1].tap;
    p.guest_v4 = *IpAddress::Parse(topo_.guests[1].guest_ip);
    p.allow = {AllowRule{*Cidr::Parse(std::string(kAnyPortHost) + "/32"), Protocol::kAny, {}}};
    return p;
  }

  UniqueFd Take(absl::StatusOr<UniqueFd> fd) {
    EXPECT_TRUE(fd.ok()) << fd.status();
    return fd.ok() ? std::move(*fd) : UniqueFd();
  }

  // A live TCP flow guest 0 -> dst:443, with both ends.
  struct Flow {
    UniqueFd guest, server;
  };
  Flow Open(const std::string& dst, int listen_fd) {
    Flow f;
    auto g = TcpOpen(Guest(0), dst, 443);
    EXPECT_TRUE(g.ok()) << dst << ": " << g.status();
    if (!g.ok()) return f;
    f.guest = std::move(*g);
    f.server = Take(TcpAccept(listen_fd));
    return f;
  }
  // Sends one message each way; true when both arrive.
  bool BothWays(Flow& f, const std::string& tag) {
    EXPECT_TRUE(StreamSend(f.guest.get(), "up-" + tag).ok());
    EXPECT_TRUE(StreamSend(f.server.get(), "down-" + tag).ok());
    const bool up = StreamReceives(f.server.get(), "up-" + tag);
    const bool down = StreamReceives(f.guest.get(), "down-" + tag);
    return up && down;
  }

  absl::Status AddInternetHost(const std::string& cidr) {
    FORKD_ASSIGN_OR_RETURN(auto rt, netfilter::RtNetlink::Open(topo_.internet.get()));
    return rt.AddAddress("inet0", *netfilter::InterfaceAddress::Parse(cidr));
  }

  Topology topo_;
  std::optional<Nftables> nft_;
  std::map<uint16_t, UniqueFd> listen4_;
  UniqueFd listen6_, udp4_, udp6_, resolver4_, resolver6_;
  std::vector<UniqueFd> keep_;
};

// --- header hygiene -------------------------------------------------------------

TEST_F(HardeningTest, Ipv4OptionsAreDroppedOnEgressAndInput) {
  const std::string& me = G().guest_ip;
  // Controls: the same raw packets without options pass, both paths.
  ASSERT_OK(RawSend(Guest(0), kAnyPortHost, Ipv4Udp(me, kAnyPortHost, kUdpPort, "plain-fwd")));
  ASSERT_TRUE(UdpReceives(udp4_.get(), "plain-fwd"));
  ASSERT_OK(RawSend(Guest(0), kResolver, Ipv4Udp(me, kResolver, 53, "plain-dns")));
  ASSERT_TRUE(UdpReceives(resolver4_.get(), "plain-dns"));
  // Attacks: a loose source route (through the metadata address) and a
  // record-route option, to an allowed destination and to the resolver.
  for (const auto& options : {LooseSourceRoute(kMetadataHost), RecordRoute()}) {
    ASSERT_OK(
        RawSend(Guest(0), kAnyPortHost, Ipv4Udp(me, kAnyPortHost, kUdpPort, "opt-fwd", options)));
    EXPECT_FALSE(UdpReceives(udp4_.get(), "opt-fwd"));
    ASSERT_OK(RawSend(Guest(0), kResolver, Ipv4Udp(me, kResolver, 53, "opt-dns", options)));
    EXPECT_FALSE(UdpReceives(resolver4_.get(), "opt-dns"));
  }
  // Also under allow-all.
  TapPolicy open = Policy();
  open.mode = EgressMode::kAllowAll;
  ASSERT_OK(nft_->ReplaceTap(open));
  ASSERT_OK(RawSend(Guest(0), kOtherHost, Ipv4Udp(me, kOtherHost, kUdpPort, "open-plain")));
  ASSERT_TRUE(UdpReceives(udp4_.get(), "open-plain"));
  ASSERT_OK(RawSend(Guest(0), kOtherHost,
                    Ipv4Udp(me, kOtherHost, kUdpPort, "open-lsrr", LooseSourceRoute(kOtherHost))));
  EXPECT_FALSE(UdpReceives(udp4_.get(), "open-lsrr"));
}

TEST_F(HardeningTest, Ipv6RoutingHeadersAreDroppedOnEgressAndInput) {
  const std::string& me = G().guest_ip6;
  const std::string& resolver = G().gateway6;
  // Controls: no extension header, and a harmless one (destination options),
  // pass on both paths. Neighbour discovery may hold the first packet back a
  // second: the first control waits longer (it returns when it arrives).
  ASSERT_OK(RawSend(Guest(0), kAllowedHost6, Ipv6Udp(me, kAllowedHost6, kUdpPort, "plain6")));
  ASSERT_TRUE(UdpReceives(udp6_.get(), "plain6", 3s));
  ASSERT_OK(RawSend(Guest(0), kAllowedHost6,
                    Ipv6Udp(me, kAllowedHost6, kUdpPort, "dstopt6", IPPROTO_DSTOPTS)));
  ASSERT_TRUE(UdpReceives(udp6_.get(), "dstopt6"));
  ASSERT_OK(RawSend(Guest(0), resolver, Ipv6Udp(me, resolver, 53, "plain6-dns")));
  ASSERT_TRUE(UdpReceives(resolver6_.get(), "plain6-dns", 3s));
  ASSERT_OK(RawSend(Guest(0), resolver, Ipv6Udp(me, resolver, 53, "dstopt6-dns", IPPROTO_DSTOPTS)));
  ASSERT_TRUE(UdpReceives(resolver6_.get(), "dstopt6-dns"));
  // Attacks: routing headers of type 0 (source route), 1 (Nimrod), 2 (Mobile
  // IPv6), 3 (RPL) and 4 (segment routing).
  for (uint8_t type : {0, 1, 2, 3, 4}) {
    const std::string tag = "rh" + std::to_string(type);
    ASSERT_OK(RawSend(Guest(0), kAllowedHost6,
                      Ipv6Udp(me, kAllowedHost6, kUdpPort, tag, IPPROTO_ROUTING, type)));
    EXPECT_FALSE(UdpReceives(udp6_.get(), tag)) << "type " << int{type};
    ASSERT_OK(RawSend(Guest(0), resolver,
                      Ipv6Udp(me, resolver, 53, tag + "-dns", IPPROTO_ROUTING, type)));
    EXPECT_FALSE(UdpReceives(resolver6_.get(), tag + "-dns")) << "type " << int{type};
  }
}

TEST_F(HardeningTest, HardenNamespaceTurnsTheSettingsTheRightWay) {
  const int pod = topo_.pod.get();
  // Control: SetUp left them the wrong way.
  auto before = ReadSysctl(pod, "net/ipv6/conf/sbt0/seg6_enabled");
  ASSERT_OK(before.status());
  ASSERT_EQ(*before, "1");
  ASSERT_OK(netfilter::HardenNamespace(pod, "sbt0"));
  for (const auto& [path, value] : netfilter::HardeningSysctls("sbt0")) {
    auto now = ReadSysctl(pod, path);
    ASSERT_OK(now.status());
    EXPECT_EQ(*now, value) << path;
  }
  // A tap that does not exist is an error naming the path, not a silent no-op.
  absl::Status missing = netfilter::HardenNamespace(pod, "sbt9");
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.message()).find("sbt9"), std::string::npos) << missing;
}

// --- revocation -----------------------------------------------------------------

TEST_F(HardeningTest, ReplaceTapCutsALiveFlowBothWays) {
  Flow revoked = Open(kAllowedHost, listen4_[443].get());
  Flow kept = Open(kAnyPortHost, listen4_[443].get());
  ASSERT_TRUE(revoked.guest && kept.guest);
  ASSERT_TRUE(BothWays(revoked, "before"));
  ASSERT_TRUE(BothWays(kept, "before"));
  // Revoke kAllowedHost; keep kAnyPortHost.
  TapPolicy narrower = Policy();
  narrower.allow.erase(narrower.allow.begin() + 1);
  ASSERT_OK(nft_->ReplaceTap(narrower));
  // The flow keeps sending both ways; nothing passes either way.
  ASSERT_OK(StreamSend(revoked.guest.get(), "up-after"));
  ASSERT_OK(StreamSend(revoked.server.get(), "down-after"));
  EXPECT_FALSE(StreamReceives(revoked.server.get(), "up-after"));
  EXPECT_FALSE(StreamReceives(revoked.guest.get(), "down-after"));
  // Control: the flow that is still allowed carries on.
  EXPECT_TRUE(BothWays(kept, "after"));
  // Control: the revoked flow itself is alive; allowed again, TCP's
  // retransmissions deliver what was held back (this wait ends when they do).
  ASSERT_OK(nft_->ReplaceTap(Policy()));
  EXPECT_TRUE(StreamReceives(revoked.server.get(), "up-after", 10s));
  EXPECT_TRUE(StreamReceives(revoked.guest.get(), "down-after", 10s));
}

TEST_F(HardeningTest, ExpiredPinCutsItsLiveFlowBothWays) {
  ASSERT_EQ(TcpConnect(Guest(0), kOtherHost, 443), Reach::kTimedOut);  // not allowed
  const auto timeout = std::chrono::milliseconds(2000);
  const auto pinned_at = std::chrono::steady_clock::now();
  ASSERT_OK(nft_->Pin(G().tap, {{*IpAddress::Parse(kOtherHost), 443, timeout}}));
  Flow pinned = Open(kOtherHost, listen4_[443].get());
  Flow kept = Open(kAnyPortHost, listen4_[443].get());
  ASSERT_TRUE(pinned.guest && kept.guest);
  ASSERT_TRUE(BothWays(pinned, "before"));
  std::this_thread::sleep_until(pinned_at + timeout + std::chrono::milliseconds(500));
  ASSERT_OK(StreamSend(pinned.guest.get(), "up-expired"));
  ASSERT_OK(StreamSend(pinned.server.get(), "down-expired"));
  EXPECT_FALSE(StreamReceives(pinned.server.get(), "up-expired"));
  EXPECT_FALSE(StreamReceives(pinned.guest.get(), "down-expired"));
  EXPECT_TRUE(BothWays(kept, "after-expiry"));
  // Control: pinned again, the same flow resumes.
  ASSERT_OK(nft_->Pin(G().tap, {{*IpAddress::Parse(kOtherHost), 443, std::chrono::seconds(60)}}));
  EXPECT_TRUE(StreamReceives(pinned.server.get(), "up-expired", 10s));
  EXPECT_TRUE(StreamReceives(pinned.guest.get(), "down-expired", 10s));
}

// --- fail closed ----------------------------------------------------------------

TEST_F(HardeningTest, RemovedTapIsFencedOffUntilItsLinkIsGone) {
  auto probe = [&](const std::string& tag) {
    struct Seen {
      Reach out, pod, in;
      bool dns;
    } s;
    s.out = TcpConnect(Guest(0), kAnyPortHost, 443);
    s.pod = TcpConnect(Guest(0), G().gateway, 9091);
    s.in = TcpConnect(topo_.internet.get(), G().guest_ip, 22);
    EXPECT_TRUE(UdpSend(Guest(0), kResolver, 53, tag).ok());
    s.dns = UdpReceives(resolver4_.get(), tag);
    return s;
  };
  ASSERT_OK(nft_->RemoveTap(G().tap));
  const auto fenced = probe("dns-fenced");
  EXPECT_EQ(fenced.out, Reach::kTimedOut);
  EXPECT_EQ(fenced.pod, Reach::kTimedOut);
  EXPECT_EQ(fenced.in, Reach::kTimedOut);
  EXPECT_FALSE(fenced.dns);
  // Control: the other tap, still installed, works.
  EXPECT_EQ(TcpConnect(Guest(1), kAnyPortHost, 443), Reach::kConnected);
  // Control: without the tap prefix (no guard rules) the same removed tap is
  // wide open: the drops above were the guard's.
  SkeletonConfig unguarded = Skeleton();
  unguarded.tap_prefix.clear();
  ASSERT_OK(nft_->EnsureSkeleton(unguarded));
  const auto open = probe("dns-open");
  EXPECT_EQ(open.out, Reach::kConnected);
  EXPECT_EQ(open.pod, Reach::kConnected);
  EXPECT_EQ(open.in, Reach::kConnected);
  EXPECT_TRUE(open.dns);
  // Guarded again, and re-added: governed by its policy (not just dropped).
  ASSERT_OK(nft_->EnsureSkeleton(Skeleton()));
  ASSERT_OK(nft_->AddTap(Policy()));
  EXPECT_EQ(TcpConnect(Guest(0), kAnyPortHost, 443), Reach::kConnected);
  EXPECT_EQ(TcpConnect(Guest(0), G().gateway, 9091), Reach::kTimedOut);
}

// --- cloud metadata ---------------------------------------------------------------

TEST_F(HardeningTest, MetadataTableHoldsUnderAllowAllWildcardsAndExceptions) {
  const std::vector<std::string> meta4 = {"168.63.129.16", "100.100.100.200", kMetadataHost};
  const std::vector<std::string> meta6 = {"fd00:ec2::1",        "fd00:ec2::254",
                                          "64:ff9b::a9fe:a9fe", "64:ff9b::a83f:8110",
                                          "2002:a9fe:a9fe::1",  "2002:6464:64c8::1"};
  for (const std::string& h : meta4) {
    if (h != kMetadataHost) ASSERT_OK(AddInternetHost(h + "/32"));
  }
  for (const std::string& h : meta6) {
    if (h != kMetadataHost6) ASSERT_OK(AddInternetHost(h + "/128"));
  }
  TapPolicy open = Policy();
  open.mode = EgressMode::kAllowAll;
  open.allow = {AllowRule{*Cidr::Parse("0.0.0.0/0"), Protocol::kAny, {}},
                AllowRule{*Cidr::Parse("::/0"), Protocol::kAny, {}}};
  // A private exception over the whole CGNAT range Alibaba's endpoint sits in.
  open.private_exceptions = {*Cidr::Parse("100.64.0.0/10"), *Cidr::Parse("fc00::/7")};
  ASSERT_OK(nft_->ReplaceTap(open));
  // Controls: public and excepted destinations pass; every metadata host is
  // up and routed (reachable from the pod itself).
  EXPECT_EQ(TcpConnect(Guest(0), kOtherHost, 443), Reach::kConnected);
  EXPECT_EQ(TcpConnect(Guest(0), "100.64.0.10", 443), Reach::kConnected);
  EXPECT_EQ(TcpConnect(Guest(0), kOtherHost6, 443, "", 3s), Reach::kConnected);
  for (const auto* hosts : {&meta4, &meta6}) {
    for (const std::string& h : *hosts) {
      ASSERT_EQ(TcpConnect(topo_.pod.get(), h, 443), Reach::kConnected) << h;
      EXPECT_EQ(TcpConnect(Guest(0), h, 443), Reach::kTimedOut) << h;
    }
  }
}

// --- bounded batches --------------------------------------------------------------

TEST_F(HardeningTest, ThousandsOfIpv6PinsInOneCall) {
  std::vector<netfilter::Pin> pins;
  for (int i = 0; i < 1500; ++i) {
    IpAddress a = *IpAddress::Parse("2001:db8:1::");
    a.bytes[14] = static_cast<uint8_t>(i >> 8);
    a.bytes[15] = static_cast<uint8_t>(i);
    pins.push_back({a, 443, std::chrono::seconds(60)});
  }
  pins.push_back({*IpAddress::Parse(kOtherHost6), 443, std::chrono::seconds(60)});
  ASSERT_OK(nft_->Pin(G().tap, pins));
  auto set = NftInNetns(topo_.pod.get(), "list set inet forkd tap_sbt0_pin6");
  ASSERT_OK(set.status());
  size_t elements = 0;
  for (size_t pos = 0; (pos = set->find("2001:db8:1::", pos)) != std::string::npos; ++pos) {
    ++elements;
  }
  EXPECT_EQ(elements, 1500u);
  // The last pin works (the whole transaction committed).
  EXPECT_EQ(TcpConnect(Guest(0), kOtherHost6, 443, "", 3s), Reach::kConnected);
  // Past the cap: a clear error, and nothing changed.
  pins.resize(netfilter::kMaxPinsPerCall + 1, pins.front());
  absl::Status s = nft_->Pin(G().tap, pins);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find("at most 2048"), std::string::npos) << s;
}

// --- auditability -----------------------------------------------------------------

std::string WithoutHandles(std::string text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (const size_t h = line.find(" # handle"); h != std::string::npos) line.resize(h);
    out += line + "\n";
    pos = end + 1;
  }
  return out;
}

TEST_F(HardeningTest, NftTextInstallsExactlyWhatTheLibraryDoes) {
  auto other = netfilter::CreateNetns();
  ASSERT_OK(other.status());
  const std::string text =
      netfilter::RenderSkeleton(Skeleton()) +
      netfilter::RenderAddTap(netfilter::BuildTapRuleset(Policy(), nft_->TableFor(G().tap))) +
      netfilter::RenderAddTap(netfilter::BuildTapRuleset(Other(), nft_->TableFor("sbt1")));
  char path[] = "/tmp/forkd_nft_text.XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << text;
  auto applied = NftInNetns(other->get(), std::string("-f ") + path);
  ::unlink(path);
  ASSERT_OK(applied.status());
  auto lib = NftInNetns(topo_.pod.get(), "list ruleset");
  auto txt = NftInNetns(other->get(), "list ruleset");
  ASSERT_OK(lib.status());
  ASSERT_OK(txt.status());
  EXPECT_EQ(WithoutHandles(*lib), WithoutHandles(*txt));
  // And it reads as addresses, not raw payload offsets.
  EXPECT_EQ(lib->find("@nh,"), std::string::npos) << *lib;
  EXPECT_EQ(lib->find("@th,"), std::string::npos) << *lib;
}

}  // namespace
}  // namespace forkd::testing
