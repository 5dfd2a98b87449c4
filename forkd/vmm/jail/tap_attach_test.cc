// The jailed VMM's tap attach, against taps the test makes in a network
// namespace it creates: the owner check, the kernel's own check once root
// is gone, and that no tap is ever created.
#include "forkd/vmm/jail/tap_attach.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "forkd/vmm/devices/virtio/tap.h"
#include "gtest/gtest.h"
#include "netfilter/links.h"
#include "netfilter/netns.h"
#include "tests/support/assert_ok.h"
#include "tests/support/requirements.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);

#define EXPECT_OK_STATUS(expr)                            \
  do {                                                    \
    const auto& s_ = (expr);                              \
    EXPECT_TRUE(s_.ok()) << #expr << ": " << s_.status(); \
  } while (0)

namespace forkd::vmm::jail {
namespace {

constexpr uid_t kUid = 61240;
constexpr gid_t kGid = 61241;

class TapAttach : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ns = netfilter::CreateNetns();
    ASSERT_OK(ns.status());
    ns_ = *std::move(ns);
    path_ = absl::StrCat("/proc/", ::getpid(), "/fd/", ns_.get());
  }
  void MakeTap(const std::string& name, std::optional<uid_t> owner, std::optional<gid_t> group) {
    auto fd = netfilter::CreateTap(
        ns_.get(),
        {.name = name, .owner = owner, .group = group, .persistent = true, .vnet_hdr = true});
    ASSERT_OK(fd.status());  // closed here: the persistent tap stays
  }
  bool Exists(const std::string& name) {
    auto rt = netfilter::RtNetlink::Open(ns_.get());
    return rt.ok() && rt->LinkExists(name);
  }
  UniqueFd ns_;
  std::string path_;
};

TEST_F(TapAttach, AttachesAPersistentTapOwnedByTheJailUid) {
  MakeTap("jt0", kUid, std::nullopt);
  auto fd = AttachTapAs("jt0", path_, kUid, kGid);
  ASSERT_OK(fd.status());
  ifreq got{};
  ASSERT_EQ(::ioctl(fd->get(), TUNGETIFF, &got), 0);
  EXPECT_STREQ(got.ifr_name, "jt0");
  EXPECT_NE(got.ifr_flags & IFF_PERSIST, 0);
  // Owned by the jail's group only: also accepted.
  MakeTap("jt1", std::nullopt, kGid);
  EXPECT_OK_STATUS(AttachTapAs("jt1", path_, kUid, kGid));
}

TEST_F(TapAttach, RefusesSomeoneElsesTapAndATapAnyoneMayOpen) {
  MakeTap("jt2", kUid + 1, std::nullopt);
  MakeTap("jt3", std::nullopt, std::nullopt);
  EXPECT_EQ(AttachTapAs("jt2", path_, kUid, kGid).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(AttachTapAs("jt3", path_, kUid, kGid).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Positive controls: the right uid gets jt2, and the unchecked attach
  // (--no-jail) does open jt3.
  EXPECT_OK_STATUS(AttachTapAs("jt2", path_, kUid + 1, kGid));
  EXPECT_OK_STATUS(virtio::OpenTap("jt3", path_));
}

TEST_F(TapAttach, AMissingTapIsNotFoundAndNeverCreated) {
  EXPECT_EQ(AttachTapAs("jt-missing", path_, kUid, kGid).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(Exists("jt-missing"));
}

// The race the owner check alone would leave open (the tap vanishes between
// the check and TUNSETIFF): the attach runs without root, so the kernel
// refuses to create the tap instead of handing back a fresh unrouted one.
TEST_F(TapAttach, TheUnprivilegedAttachCannotCreateATap) {
  absl::StatusOr<UniqueFd> as_jail = absl::InternalError("not run");
  // This thread loses root for good and ends right after: no guard to
  // return it to the original namespace (it could not).
  std::thread t([&] {
    if (::setns(ns_.get(), CLONE_NEWNET) != 0) return;
    as_jail = AttachHereAs("jt-vanished", kUid, kGid, "test");
  });
  t.join();
  EXPECT_EQ(as_jail.status().code(), absl::StatusCode::kPermissionDenied) << as_jail.status();
  EXPECT_FALSE(Exists("jt-vanished"));
  // Positive control: with root, the same TUNSETIFF creates it.
  std::thread t2([&] {
    auto guard = netfilter::NetnsGuard::Enter(ns_.get());
    if (!guard.ok()) return;
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "jt-vanished");
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    ASSERT_EQ(::ioctl(fd.get(), TUNSETIFF, &ifr), 0);
    EXPECT_TRUE(Exists("jt-vanished"));
  });
  t2.join();
}

TEST_F(TapAttach, ANonPersistentTapIsRefused) {
  // Held open by its creator (as a tap forkd did not make persistent would be).
  auto held = netfilter::CreateTap(ns_.get(), {.name = "jt4", .owner = kUid, .vnet_hdr = true});
  ASSERT_OK(held.status());
  auto owner = absl::StatusOr<TapOwner>(absl::InternalError("not run"));
  std::thread t([&] {
    auto guard = netfilter::NetnsGuard::Enter(ns_.get());
    if (guard.ok()) owner = QueryTapOwner("jt4");
  });
  t.join();
  ASSERT_OK(owner.status());
  EXPECT_FALSE(owner->persistent);
  EXPECT_FALSE(AttachTapAs("jt4", path_, kUid, kGid).ok());
}

}  // namespace
}  // namespace forkd::vmm::jail
