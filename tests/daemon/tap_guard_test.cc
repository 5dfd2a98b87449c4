// The fail-closed guard (netfilter, forkd_guard) covers every tap forkd
// names: a tap named by netfilter/tap_name.h that has no dispatch entry (its
// AddTap never ran, or RemoveTap already did) has its packets dropped; the
// same tap installed passes what its policy allows, and an interface outside
// forkd's naming is not the guard's business. Real packets, in namespaces
// the test creates:
//
//   guest ns: eth0 10.201.0.2/29 ── veth ── pod ns: <forkd-named tap> 10.201.0.1/29
//   guest ns: eth1 10.201.1.2/29 ── veth ── pod ns: ctl0 10.201.1.1/29 (not forkd's)
//
// The pod namespace gets the skeleton forkd installs (default SkeletonConfig),
// and a UDP listener on port 53 of each pod-side address.
#include <chrono>
#include <thread>

#include "common/errno_status.h"
#include "gtest/gtest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"
#include "netfilter/tap_name.h"
#include "tests/netfilter/netns_sockets.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::testing {
namespace {

using namespace std::chrono_literals;
using netfilter::InterfaceAddress;
using netfilter::IpAddress;

absl::Status WaitOperUp(netfilter::RtNetlink& rt, const std::string& dev) {
  for (int i = 0; i < 2000; i++) {  // hang guard: a veth comes up within a second
    FORKD_ASSIGN_OR_RETURN(bool up, rt.IsOperUp(dev));
    if (up) return absl::OkStatus();
    std::this_thread::sleep_for(5ms);
  }
  return absl::DeadlineExceededError(dev + " did not come up");
}

TEST(TapGuardTest, EveryForkdTapNameIsGuarded) {
  for (uint32_t slot : {1u, 9u, 4095u}) {
    EXPECT_TRUE(netfilter::IsForkdTapName(netfilter::SandboxTapName(slot)));
  }
  EXPECT_TRUE(netfilter::IsForkdTapName(netfilter::BuildTapName(0xdeadbeef)));
  EXPECT_LE(netfilter::BuildTapName(0xffffffff).size(), netfilter::kMaxTapNameLength);
  EXPECT_NE(netfilter::BuildTapName(1), netfilter::SandboxTapName(1));
  // The guard's prefix is forkd's naming unless an operator changes it.
  EXPECT_EQ(netfilter::SkeletonConfig{}.tap_prefix, netfilter::kForkdTapPrefix);
  EXPECT_FALSE(netfilter::IsForkdTapName("ctl0"));
}

TEST(TapGuardTest, ForkdNamedTapWithoutDispatchEntryIsDropped) {
  const std::string tap = netfilter::SandboxTapName(7);
  auto pod = netfilter::CreateNetns();
  ASSERT_OK(pod.status());
  auto guest = netfilter::CreateNetns();
  ASSERT_OK(guest.status());
  auto rt = netfilter::RtNetlink::Open(pod->get());
  ASSERT_OK(rt.status());
  auto grt = netfilter::RtNetlink::Open(guest->get());
  ASSERT_OK(grt.status());
  ASSERT_OK(rt->SetUp("lo"));
  ASSERT_OK(grt->SetUp("lo"));
  const std::pair<std::string, std::string> links[] = {{tap, "eth0"}, {"ctl0", "eth1"}};
  for (int i = 0; i < 2; i++) {
    const auto& [pod_side, guest_side] = links[i];
    const std::string net = "10.201." + std::to_string(i) + ".";
    ASSERT_OK(rt->CreateVethPair(pod_side, guest_side, guest->get()));
    ASSERT_OK(rt->AddAddress(pod_side, *InterfaceAddress::Parse(net + "1/29")));
    ASSERT_OK(grt->AddAddress(guest_side, *InterfaceAddress::Parse(net + "2/29")));
    ASSERT_OK(rt->SetUp(pod_side));
    ASSERT_OK(grt->SetUp(guest_side));
    ASSERT_OK(WaitOperUp(*rt, pod_side));
    ASSERT_OK(WaitOperUp(*grt, guest_side));
  }
  auto on_tap = UdpBind(pod->get(), "10.201.0.1", 53);
  ASSERT_OK(on_tap.status());
  auto on_ctl = UdpBind(pod->get(), "10.201.1.1", 53);
  ASSERT_OK(on_ctl.status());

  auto nft = netfilter::Nftables::Open(pod->get(), 1);
  ASSERT_OK(nft.status());
  // Before any skeleton: the tap is open (the drops below are the guard's).
  ASSERT_OK(UdpSend(guest->get(), "10.201.0.1", 53, "before-skeleton"));
  EXPECT_TRUE(UdpReceives(on_tap->get(), "before-skeleton"));

  // What forkd installs (forkd/pipeline/node.cc): the default skeleton.
  ASSERT_OK(nft->EnsureSkeleton({.uplink = std::nullopt, .guest_subnets = {}, .shards = 1}));
  // Blocked: forkd's tap with no dispatch entry.
  ASSERT_OK(UdpSend(guest->get(), "10.201.0.1", 53, "no-dispatch"));
  EXPECT_FALSE(UdpReceives(on_tap->get(), "no-dispatch"));
  // Control: an interface outside forkd's naming is untouched by the guard.
  ASSERT_OK(UdpSend(guest->get(), "10.201.1.1", 53, "not-forkds"));
  EXPECT_TRUE(UdpReceives(on_ctl->get(), "not-forkds"));

  // Control: the same tap installed, with its address as the resolver,
  // passes its resolver traffic.
  netfilter::TapPolicy policy;
  policy.tap = tap;
  policy.guest_v4 = *IpAddress::Parse("10.201.0.2");
  policy.resolvers = {*IpAddress::Parse("10.201.0.1")};
  ASSERT_OK(nft->AddTap(policy));
  ASSERT_OK(UdpSend(guest->get(), "10.201.0.1", 53, "installed"));
  EXPECT_TRUE(UdpReceives(on_tap->get(), "installed"));

  // Removed again (a reap before the link is deleted): dropped again.
  ASSERT_OK(nft->RemoveTap(tap));
  ASSERT_OK(UdpSend(guest->get(), "10.201.0.1", 53, "removed"));
  EXPECT_FALSE(UdpReceives(on_tap->get(), "removed"));
}

}  // namespace
}  // namespace forkd::testing
