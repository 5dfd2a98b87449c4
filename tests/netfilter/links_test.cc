// Tier 1: the rtnetlink/tap helpers, in namespaces the test creates.
#include <net/if.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "tests/netfilter/netns_sockets.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

namespace forkd::netfilter {
namespace {

class LinksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ns = CreateNetns();
    ASSERT_OK(ns.status());
    ns_ = std::move(*ns);
    auto rt = RtNetlink::Open(ns_.get());
    ASSERT_OK(rt.status());
    rt_.emplace(std::move(*rt));
  }
  UniqueFd ns_;
  std::optional<RtNetlink> rt_;
};

TEST_F(LinksTest, NonPersistentTapLivesAsLongAsItsFd) {
  auto fd = CreateTap(ns_.get(), {.name = "tap0"});
  ASSERT_OK(fd.status());
  EXPECT_TRUE(rt_->LinkExists("tap0"));
  fd->reset();
  EXPECT_FALSE(rt_->LinkExists("tap0"));
}

TEST_F(LinksTest, PersistentTapOutlivesItsFdUntilDeleted) {
  {
    auto fd = CreateTap(
        ns_.get(),
        {.name = "tap1", .owner = 1000, .group = 1000, .persistent = true, .vnet_hdr = true});
    ASSERT_OK(fd.status());
  }
  EXPECT_TRUE(rt_->LinkExists("tap1"));
  // Only the owner (or root) may attach to it again: reopen as root works.
  auto again = CreateTap(ns_.get(), {.name = "tap1", .vnet_hdr = true});
  ASSERT_OK(again.status());
  again->reset();
  ASSERT_OK(rt_->DeleteLink("tap1"));
  EXPECT_FALSE(rt_->LinkExists("tap1"));
}

TEST_F(LinksTest, TapIsCreatedInTheTargetNamespaceOnly) {
  auto fd = CreateTap(ns_.get(), {.name = "tapns"});
  ASSERT_OK(fd.status());
  auto own = RtNetlink::Open(-1);
  ASSERT_OK(own.status());
  EXPECT_FALSE(own->LinkExists("tapns"));  // the test's own namespace is untouched
  EXPECT_TRUE(rt_->LinkExists("tapns"));
}

TEST_F(LinksTest, BadTapNamesAreRefusedBeforeTheKernel) {
  EXPECT_EQ(CreateTap(ns_.get(), {.name = "this-name-is-too-long"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateTap(ns_.get(), {.name = "bad/name"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LinksTest, VethPairAcrossNamespacesWithAddressRouteMacAndState) {
  auto other = CreateNetns();
  ASSERT_OK(other.status());
  ASSERT_OK(rt_->CreateVethPair("va", "vb", other->get()));
  auto peer = RtNetlink::Open(other->get());
  ASSERT_OK(peer.status());
  EXPECT_TRUE(peer->LinkExists("vb"));
  EXPECT_FALSE(rt_->LinkExists("vb"));
  ASSERT_OK(rt_->SetMac("va", *ParseMac("02:00:00:00:00:2a")));
  ASSERT_OK(rt_->AddAddress("va", *InterfaceAddress::Parse("10.9.0.1/30")));
  ASSERT_OK(rt_->SetUp("va"));
  ASSERT_OK(peer->AddAddress("vb", *InterfaceAddress::Parse("10.9.0.2/30")));
  ASSERT_OK(peer->SetUp("vb"));
  ASSERT_OK(
      rt_->AddRoute(*Cidr::Parse("10.77.0.0/16"), *IpAddress::Parse("10.9.0.2"), std::nullopt));
  // A duplicate route is an error that says so.
  EXPECT_EQ(rt_->AddRoute(*Cidr::Parse("10.77.0.0/16"), *IpAddress::Parse("10.9.0.2"), std::nullopt)
                .code(),
            absl::StatusCode::kAlreadyExists);
  // A listener on the far side is reachable through the pair.
  auto listener = testing::TcpListen(other->get(), "10.9.0.2", 4000);
  ASSERT_OK(listener.status());
  for (int i = 0; i < 200 && !*rt_->IsOperUp("va"); ++i) usleep(5000);
  EXPECT_EQ(testing::TcpConnect(ns_.get(), "10.9.0.2", 4000, "", std::chrono::seconds(3)),
            testing::Reach::kConnected);
  // Move one end elsewhere.
  auto third = CreateNetns();
  ASSERT_OK(third.status());
  ASSERT_OK(rt_->MoveToNetns("va", third->get()));
  EXPECT_FALSE(rt_->LinkExists("va"));
  EXPECT_TRUE(RtNetlink::Open(third->get())->LinkExists("va"));
}

TEST_F(LinksTest, ErrorsNameTheLink) {
  absl::Status s = rt_->DeleteLink("nosuch0");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("nosuch0"), std::string::npos) << s;
  EXPECT_FALSE(rt_->SetUp("nosuch0").ok());
  EXPECT_FALSE(ParseMac("02:00:00:00:00").ok());
  EXPECT_FALSE(ParseMac("zz:00:00:00:00:00").ok());
  EXPECT_FALSE(InterfaceAddress::Parse("10.0.0.1").ok());
  EXPECT_FALSE(InterfaceAddress::Parse("10.0.0.1/33").ok());
}

TEST(NetnsGuard, RestoresTheThreadsNamespace) {
  auto before = CurrentNetns();
  ASSERT_OK(before.status());
  struct stat a {
  }, b{};
  ASSERT_EQ(fstat(before->get(), &a), 0);
  auto target = CreateNetns();
  ASSERT_OK(target.status());
  {
    auto guard = NetnsGuard::Enter(target->get());
    ASSERT_OK(guard.status());
    auto inside = CurrentNetns();
    struct stat c {};
    ASSERT_EQ(fstat(inside->get(), &c), 0);
    EXPECT_NE(c.st_ino, a.st_ino);
  }
  auto after = CurrentNetns();
  ASSERT_EQ(fstat(after->get(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_FALSE(NetnsGuard::Enter(12345).ok());  // not a namespace fd: error, thread unchanged
}

}  // namespace
}  // namespace forkd::netfilter
