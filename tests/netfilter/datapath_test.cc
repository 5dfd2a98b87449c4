// Tier 1: the nftables datapath proven with real packets, inside namespaces
// the test creates (see topology.h). Every negative check has a positive
// control showing the destination is up and routed, so a broken network can
// never pass for a working filter.
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "netfilter/nft_encode.h"
#include "netfilter/nftables.h"
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
using netfilter::TapPolicy;

AllowRule Allow(const std::string& cidr, Protocol proto = Protocol::kAny,
                std::vector<netfilter::PortRange> ports = {}) {
  return AllowRule{*Cidr::Parse(cidr), proto, std::move(ports)};
}

class DatapathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = Topology::Create(2);
    ASSERT_OK(t.status());
    topo_ = std::move(*t);
    const int inet = topo_.internet.get();
    const int pod = topo_.pod.get();
    for (uint16_t port : {80, 443, 8080}) Keep(TcpListen(inet, "0.0.0.0", port));
    internet_udp_ = Take(UdpBind(inet, "0.0.0.0", 7000));
    Keep(TcpListen(pod, topo_.guests[0].gateway, 9091));  // stands in for the sandbox API
    Keep(TcpListen(pod, kResolver, 9091));
    Keep(TcpListen(pod, kResolver, 53));
    resolver_udp_ = Take(UdpBind(pod, kResolver, 53));
    Keep(TcpListen(Guest(0), "0.0.0.0", 22));

    auto nft = Nftables::Open(pod);
    ASSERT_OK(nft.status());
    nft_.emplace(std::move(*nft));
    ASSERT_OK(nft_->EnsureSkeleton(
        {.uplink = kUplink, .guest_subnets = {*Cidr::Parse("10.200.0.0/16")}}));
    ASSERT_OK(nft_->AddTap(PolicyA()));
    ASSERT_OK(nft_->AddTap(PolicyB()));
  }

  TapPolicy Base(int i) {
    TapPolicy p;
    p.tap = topo_.guests[i].tap;
    p.guest_v4 = *IpAddress::Parse(topo_.guests[i].guest_ip);
    p.resolvers = {*IpAddress::Parse(kResolver)};
    return p;
  }
  // Guest 0: one host on 443/tcp only, one host on every port.
  TapPolicy PolicyA() {
    TapPolicy p = Base(0);
    p.allow = {Allow(std::string(kAllowedHost) + "/32", Protocol::kTcp, {{443, 443}}),
               Allow(std::string(kAnyPortHost) + "/32")};
    return p;
  }
  // Guest 1: only the other host on 443.
  TapPolicy PolicyB() {
    TapPolicy p = Base(1);
    p.allow = {Allow(std::string(kOtherHost) + "/32", Protocol::kTcp, {{443, 443}})};
    return p;
  }

  int Guest(int i) const { return topo_.guests[i].ns.get(); }
  Reach FromGuest(int i, const std::string& dst, uint16_t port, const std::string& src = "") {
    return TcpConnect(Guest(i), dst, port, src);
  }
  Reach FromPod(const std::string& dst, uint16_t port) {
    return TcpConnect(topo_.pod.get(), dst, port);
  }

  std::string Ruleset() {
    auto out = NftInNetns(topo_.pod.get(), "-j list ruleset");
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : "";
  }

  void Keep(absl::StatusOr<UniqueFd> fd) { keep_.push_back(Take(std::move(fd))); }
  UniqueFd Take(absl::StatusOr<UniqueFd> fd) {
    EXPECT_TRUE(fd.ok()) << fd.status();
    return fd.ok() ? std::move(*fd) : UniqueFd();
  }

  Topology topo_;
  std::optional<Nftables> nft_;
  std::vector<UniqueFd> keep_;
  UniqueFd internet_udp_;
  UniqueFd resolver_udp_;
};

TEST_F(DatapathTest, AllowedPortConnectsOtherPortAndOtherHostBlocked) {
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kConnected);
  // Positive controls: both destinations are up and routed from the pod.
  ASSERT_EQ(FromPod(kAllowedHost, 8080), Reach::kConnected);
  ASSERT_EQ(FromPod(kOtherHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kAllowedHost, 8080), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kTimedOut);
}

TEST_F(DatapathTest, SeveralPortsAndRangesInOneRule) {
  TapPolicy p = Base(0);
  p.allow = {Allow(std::string(kAllowedHost) + "/32", Protocol::kTcp, {{8000, 8080}, {80, 80}})};
  ASSERT_OK(nft_->ReplaceTap(p));
  ASSERT_EQ(FromPod(kAllowedHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kAllowedHost, 80), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kAllowedHost, 8080), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kTimedOut);
}

TEST_F(DatapathTest, RuleWithoutPortsAllowsEveryPortAndProtocol) {
  EXPECT_EQ(FromGuest(0, kAnyPortHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kAnyPortHost, 8080), Reach::kConnected);
  ASSERT_OK(UdpSend(Guest(0), kAnyPortHost, 7000, "any-port-udp"));
  std::string seen_from;
  EXPECT_TRUE(UdpReceives(internet_udp_.get(), "any-port-udp", kDropWait, &seen_from));
  // The masquerade rule rewrote the guest's address to the pod's uplink.
  EXPECT_EQ(seen_from, kUplinkAddress);
  // The ported rule does not open UDP to its host.
  ASSERT_OK(UdpSend(Guest(0), kAllowedHost, 7000, "ported-udp"));
  EXPECT_FALSE(UdpReceives(internet_udp_.get(), "ported-udp"));
}

TEST_F(DatapathTest, MetadataBlockedEvenInAllowAllMode) {
  ASSERT_EQ(FromPod(kMetadataHost, 80), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kMetadataHost, 80), Reach::kTimedOut);
  TapPolicy open = Base(0);
  open.mode = EgressMode::kAllowAll;
  ASSERT_OK(nft_->ReplaceTap(open));
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kMetadataHost, 80), Reach::kTimedOut);
}

TEST_F(DatapathTest, PrivateRangesBlockedByDefaultReachableWhenExcepted) {
  TapPolicy open = Base(0);
  open.mode = EgressMode::kAllowAll;
  ASSERT_OK(nft_->ReplaceTap(open));
  ASSERT_EQ(FromGuest(0, kOtherHost, 443), Reach::kConnected);  // allow-all works
  for (const std::string& host : PrivateHosts()) {
    ASSERT_EQ(FromPod(host, 443), Reach::kConnected) << host;
    EXPECT_EQ(FromGuest(0, host, 443), Reach::kTimedOut) << host;
  }
  for (const char* range : {"10.50.0.0/16", "172.16.0.0/12", "192.168.0.0/24", "100.64.0.10/32"}) {
    open.private_exceptions.push_back(*Cidr::Parse(range));
  }
  ASSERT_OK(nft_->ReplaceTap(open));
  for (const std::string& host : PrivateHosts()) {
    EXPECT_EQ(FromGuest(0, host, 443), Reach::kConnected) << host;
  }
  // In deny-by-default mode an exception alone opens nothing; an allow rule does.
  TapPolicy deny = Base(0);
  deny.private_exceptions = {*Cidr::Parse("10.50.0.0/16")};
  ASSERT_OK(nft_->ReplaceTap(deny));
  EXPECT_EQ(FromGuest(0, "10.50.0.10", 443), Reach::kTimedOut);
  deny.allow = {Allow("10.50.0.10/32", Protocol::kTcp, {{443, 443}})};
  ASSERT_OK(nft_->ReplaceTap(deny));
  EXPECT_EQ(FromGuest(0, "10.50.0.10", 443), Reach::kConnected);
}

TEST_F(DatapathTest, SpoofedSourceIsDropped) {
  const GuestLink& g = topo_.guests[0];
  ASSERT_OK(UdpSend(Guest(0), kAnyPortHost, 7000, "own-source", g.guest_ip));
  ASSERT_TRUE(UdpReceives(internet_udp_.get(), "own-source"));
  ASSERT_OK(UdpSend(Guest(0), kAnyPortHost, 7000, "spoofed-source", g.spoof_ip));
  EXPECT_FALSE(UdpReceives(internet_udp_.get(), "spoofed-source"));
  EXPECT_EQ(FromGuest(0, kAnyPortHost, 443, g.spoof_ip), Reach::kTimedOut);
  // Spoofing is no way into pod-local services either.
  ASSERT_OK(UdpSend(Guest(0), kResolver, 53, "spoofed-dns", g.spoof_ip));
  EXPECT_FALSE(UdpReceives(resolver_udp_.get(), "spoofed-dns"));
  // And it stays spoofed in allow-all mode.
  TapPolicy open = Base(0);
  open.mode = EgressMode::kAllowAll;
  ASSERT_OK(nft_->ReplaceTap(open));
  ASSERT_OK(UdpSend(Guest(0), kAnyPortHost, 7000, "spoofed-open", g.spoof_ip));
  EXPECT_FALSE(UdpReceives(internet_udp_.get(), "spoofed-open"));
  auto counter = NftInNetns(topo_.pod.get(), "list counter inet forkd tap_sbt0_spoofed");
  ASSERT_OK(counter.status());
  EXPECT_EQ(counter->find("packets 0 "), std::string::npos) << *counter;
}

TEST_F(DatapathTest, GuestReachesOnlyTheResolverAmongPodLocalAddresses) {
  const GuestLink& g = topo_.guests[0];
  ASSERT_EQ(FromPod(g.gateway, 9091), Reach::kConnected);
  ASSERT_EQ(FromPod(kResolver, 9091), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, g.gateway, 9091), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(0, kResolver, 9091), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(0, kResolver, 53), Reach::kConnected);
  ASSERT_OK(UdpSend(Guest(0), kResolver, 53, "dns-query"));
  EXPECT_TRUE(UdpReceives(resolver_udp_.get(), "dns-query"));
}

TEST_F(DatapathTest, UnsolicitedInboundToTheGuestIsDropped) {
  const GuestLink& g = topo_.guests[0];
  // Positive control: with no forkd ruleset at all, the guest's listener is
  // reachable from outside.
  ASSERT_OK(nft_->RemoveAll());
  ASSERT_EQ(TcpConnect(topo_.internet.get(), g.guest_ip, 22), Reach::kConnected);
  ASSERT_OK(
      nft_->EnsureSkeleton({.uplink = kUplink, .guest_subnets = {*Cidr::Parse("10.200.0.0/16")}}));
  ASSERT_OK(nft_->AddTap(PolicyA()));
  EXPECT_EQ(TcpConnect(topo_.internet.get(), g.guest_ip, 22), Reach::kTimedOut);
  // The guest's own flows still get their replies.
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kConnected);
}

TEST_F(DatapathTest, PinnedAddressReachableUntilItsTimeout) {
  ASSERT_EQ(FromPod(kOtherHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kTimedOut);
  const auto timeout = std::chrono::milliseconds(1500);
  const auto pinned_at = std::chrono::steady_clock::now();
  ASSERT_OK(nft_->Pin(topo_.guests[0].tap, {{*IpAddress::Parse(kOtherHost), 443, timeout}}));
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kOtherHost, 8080), Reach::kTimedOut);  // only the pinned port
  std::this_thread::sleep_until(pinned_at + timeout + std::chrono::milliseconds(500));
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kTimedOut);
}

TEST_F(DatapathTest, RepinningExtendsThePin) {
  const auto pinned_at = std::chrono::steady_clock::now();
  const IpAddress other = *IpAddress::Parse(kOtherHost);
  ASSERT_OK(nft_->Pin(topo_.guests[0].tap, {{other, 443, std::chrono::milliseconds(1000)}}));
  ASSERT_OK(nft_->Pin(topo_.guests[0].tap, {{other, 443, std::chrono::seconds(60)}}));
  std::this_thread::sleep_until(pinned_at + std::chrono::milliseconds(1500));
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kConnected);
}

TEST_F(DatapathTest, TwoTapsAreIndependentAndRemovalLeavesNothing) {
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(1, kOtherHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(1, kAllowedHost, 443), Reach::kTimedOut);

  auto taps = nft_->ListTaps();
  ASSERT_OK(taps.status());
  EXPECT_EQ(*taps, (std::vector<std::string>{"sbt0", "sbt1"}));
  ASSERT_NE(Ruleset().find("sbt1"), std::string::npos);

  ASSERT_OK(nft_->RemoveTap("sbt1"));
  EXPECT_EQ(Ruleset().find("sbt1"), std::string::npos) << "an object of sbt1 survived removal";
  taps = nft_->ListTaps();
  ASSERT_OK(taps.status());
  EXPECT_EQ(*taps, (std::vector<std::string>{"sbt0"}));
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kTimedOut);
}

TEST_F(DatapathTest, FailedBatchLeavesNothingHalfInstalled) {
  TapPolicy p = Base(0);
  p.tap = "sbt9";
  const std::string before = Ruleset();
  netfilter::Batch batch = nft_->NewBatch();
  nft_->AppendAddTap(batch, netfilter::BuildTapRuleset(p, nft_->TableFor(p.tap)));
  // A last message the kernel must refuse: a rule for a chain that does not exist.
  netfilter::Rule accept;
  accept.verdict = netfilter::Verdict::kAccept;
  netfilter::encode::NewRule(batch, nft_->TableFor("sbt9"), "no_such_chain", accept, "poison rule");
  absl::Status s = nft_->Commit(batch, "add tap sbt9");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(std::string(s.message()).find("poison rule"), std::string::npos) << s;
  const std::string after = Ruleset();
  EXPECT_EQ(after.find("sbt9"), std::string::npos) << "part of the failed batch was committed";
  EXPECT_EQ(before, after);
  // And nothing is left that would make a clean retry collide.
  ASSERT_OK(nft_->AddTap(p));
}

TEST_F(DatapathTest, SkeletonSetupIsIdempotent) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK(nft_->EnsureSkeleton(
        {.uplink = kUplink, .guest_subnets = {*Cidr::Parse("10.200.0.0/16")}}));
  }
  auto forward = NftInNetns(topo_.pod.get(), "list chain inet forkd forward");
  ASSERT_OK(forward.status());
  size_t vmaps = 0;
  for (size_t pos = 0; (pos = forward->find("vmap", pos)) != std::string::npos; ++pos) ++vmaps;
  EXPECT_EQ(vmaps, 2u) << *forward;
  auto taps = nft_->ListTaps();
  ASSERT_OK(taps.status());
  EXPECT_EQ(taps->size(), 2u);
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kTimedOut);
}

TEST_F(DatapathTest, ReplaceSwapsThePolicyAtomically) {
  TapPolicy swapped = Base(0);
  swapped.allow = {Allow(std::string(kOtherHost) + "/32", Protocol::kTcp, {{443, 443}})};
  ASSERT_OK(nft_->ReplaceTap(swapped));
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kTimedOut);
  // The chain holds exactly the new policy's rules: no appended leftovers.
  auto chain = NftInNetns(topo_.pod.get(), "list chain inet forkd tap_sbt0_egress");
  ASSERT_OK(chain.status());
  EXPECT_EQ(chain->find(kAllowedHost), std::string::npos) << *chain;
}

TEST_F(DatapathTest, Ipv6GuestIsFencedLikeIpv4) {
  const int inet = topo_.internet.get();
  Keep(TcpListen(inet, "::", 443));
  Keep(TcpListen(inet, "::", 80));
  const GuestLink& g = topo_.guests[0];
  ASSERT_OK(nft_->EnsureSkeleton(
      {.uplink = kUplink,
       .guest_subnets = {*Cidr::Parse("10.200.0.0/16"), *Cidr::Parse("fd42::/16")}}));
  TapPolicy p = PolicyA();
  p.guest_v6 = *IpAddress::Parse(g.guest_ip6);
  p.allow.push_back(Allow(std::string(kAllowedHost6) + "/128", Protocol::kTcp, {{443, 443}}));
  ASSERT_OK(nft_->ReplaceTap(p));
  // Controls: every destination is up and routed from the pod.
  ASSERT_EQ(FromPod(kAllowedHost6, 80), Reach::kConnected);
  ASSERT_EQ(FromPod(kOtherHost6, 443), Reach::kConnected);
  ASSERT_EQ(FromPod(kMetadataHost6, 80), Reach::kConnected);
  // The first packet waits for neighbour discovery, whose retransmit timer is
  // a second: give this positive check room (it returns as soon as it connects).
  EXPECT_EQ(TcpConnect(Guest(0), kAllowedHost6, 443, "", 3s), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kAllowedHost6, 80), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(0, kOtherHost6, 443), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(0, kMetadataHost6, 80), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(0, kAllowedHost6, 443, g.spoof_ip6), Reach::kTimedOut);
  // IPv4 still works beside it.
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kConnected);
  // A v6 pin opens the other host's port until it expires.
  ASSERT_OK(nft_->Pin(g.tap, {{*IpAddress::Parse(kOtherHost6), 443, std::chrono::seconds(30)}}));
  EXPECT_EQ(FromGuest(0, kOtherHost6, 443), Reach::kConnected);
  // Dropping the guest's IPv6 address from the policy closes IPv6 entirely.
  ASSERT_OK(nft_->ReplaceTap(PolicyA()));
  EXPECT_EQ(FromGuest(0, kAllowedHost6, 443), Reach::kTimedOut);
}

TEST_F(DatapathTest, ClearErrorsForExistingAndUnknownTaps) {
  absl::Status again = nft_->AddTap(PolicyA());
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_NE(std::string(again.message()).find("add tap sbt0"), std::string::npos) << again;
  TapPolicy ghost = Base(0);
  ghost.tap = "ghost";
  EXPECT_EQ(nft_->ReplaceTap(ghost).code(), absl::StatusCode::kNotFound);
  absl::Status rm = nft_->RemoveTap("ghost");
  EXPECT_EQ(rm.code(), absl::StatusCode::kNotFound) << rm;
  EXPECT_NE(std::string(rm.message()).find("remove tap ghost"), std::string::npos) << rm;
  // The failed calls changed nothing.
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kConnected);
}

TEST_F(DatapathTest, ShardedTablesFenceEachTapAndListTogether) {
  ASSERT_OK(nft_->RemoveAll());
  auto sharded = Nftables::Open(topo_.pod.get(), 4);
  ASSERT_OK(sharded.status());
  ASSERT_OK(sharded->EnsureSkeleton(
      {.uplink = kUplink, .guest_subnets = {*Cidr::Parse("10.200.0.0/16")}, .shards = 4}));
  ASSERT_NE(sharded->TableFor("sbt0"), sharded->TableFor("sbt1"));  // the two taps hash apart
  ASSERT_OK(sharded->AddTap(PolicyA()));
  ASSERT_OK(sharded->AddTap(PolicyB()));
  EXPECT_EQ(FromGuest(0, kAllowedHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(0, kOtherHost, 443), Reach::kTimedOut);
  EXPECT_EQ(FromGuest(1, kOtherHost, 443), Reach::kConnected);
  EXPECT_EQ(FromGuest(1, kAllowedHost, 443), Reach::kTimedOut);
  auto taps = sharded->ListTaps();
  ASSERT_OK(taps.status());
  EXPECT_EQ(*taps, (std::vector<std::string>{"sbt0", "sbt1"}));
  // A handle opened with another shard count is refused, not silently wrong.
  EXPECT_FALSE(
      nft_->EnsureSkeleton(
              {.uplink = kUplink, .guest_subnets = {*Cidr::Parse("10.200.0.0/16")}, .shards = 4})
          .ok());
  ASSERT_OK(nft_->RemoveAll());
  EXPECT_EQ(Ruleset().find("forkd"), std::string::npos);
}

TEST_F(DatapathTest, RemoveAllLeavesAnEmptyRuleset) {
  ASSERT_OK(nft_->RemoveAll());
  auto out = NftInNetns(topo_.pod.get(), "list ruleset");
  ASSERT_OK(out.status());
  EXPECT_EQ(*out, "");
  ASSERT_OK(nft_->RemoveAll());  // also fine on a clean namespace
}

}  // namespace
}  // namespace forkd::testing
