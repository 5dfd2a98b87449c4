// Tier 1 (root + netns): gate::Reap finds a tap's nftables objects in the
// filter table ForkResources::nft_shards selects. With a shard count other
// than the skeleton's, that table does not hold the tap; the reap must then
// say so (and keep the tap in the fork's resources) instead of taking the
// NotFound for "already gone" and leaving the chains behind.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "forkd/gate/fork_resources.h"
#include "gtest/gtest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "netfilter/nftables.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::gate {
namespace {

constexpr uint32_t kShards = 2;
constexpr char kTap[] = "rsh1";

class ReapShardsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ns = netfilter::CreateNetns();
    ASSERT_OK(ns.status());
    netns_ = std::move(*ns);
    auto nft = netfilter::Nftables::Open(netns_.get(), kShards);
    ASSERT_OK(nft.status());
    nft_.emplace(std::move(*nft));
    ASSERT_OK(nft_->EnsureSkeleton({.shards = kShards}));
    ASSERT_OK(netfilter::CreateTap(netns_.get(), {.name = kTap, .persistent = true}).status());
    netfilter::TapPolicy policy;
    policy.tap = kTap;
    policy.guest_v4 = *netfilter::IpAddress::Parse("10.200.0.2");
    ASSERT_OK(nft_->AddTap(policy));
  }

  ForkResources Fork(uint32_t shards) {
    ForkResources fork;
    fork.fork_id = "fork-shards";
    fork.netns = netfilter::OpenNetns("/proc/self/fd/" + std::to_string(netns_.get())).value();
    fork.tap = kTap;
    fork.nft_shards = shards;
    return fork;
  }
  bool Installed() {
    auto taps = nft_->ListTaps();
    EXPECT_TRUE(taps.ok()) << taps.status();
    return taps.ok() && std::find(taps->begin(), taps->end(), kTap) != taps->end();
  }

  UniqueFd netns_;
  std::optional<netfilter::Nftables> nft_;
};

TEST_F(ReapShardsTest, WrongShardCountIsAnErrorNotAQuietLeak) {
  ForkResources fork = Fork(1);
  absl::Status s = Reap(fork);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(std::string(s.message()).find("reap fork fork-shards"), std::string::npos) << s;
  EXPECT_NE(std::string(s.message()).find(kTap), std::string::npos) << s;
  EXPECT_TRUE(Installed()) << "the chains were removed after all";
  EXPECT_EQ(fork.tap, kTap) << "a failed network reap must keep the tap in the resources";
  // The right shard count finishes the job.
  fork.nft_shards = kShards;
  ASSERT_OK(Reap(fork));
  EXPECT_FALSE(Installed());
  EXPECT_TRUE(fork.tap.empty());
}

TEST_F(ReapShardsTest, RightShardCountRemovesEverythingAndAGoneTapIsNoError) {
  ForkResources fork = Fork(kShards);
  ASSERT_OK(Reap(fork));
  EXPECT_FALSE(Installed());
  EXPECT_FALSE(netfilter::RtNetlink::Open(netns_.get())->LinkExists(kTap));
  // Already gone, whatever table the shard count selects: nothing to report.
  ForkResources again = Fork(1);
  ASSERT_OK(Reap(again));
  ForkResources twice = Fork(kShards);
  ASSERT_OK(Reap(twice));
}

}  // namespace
}  // namespace forkd::gate
