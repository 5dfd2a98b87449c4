#include "forkd/sandbox/jail_args.h"

#include <gtest/gtest.h>

#include <set>

namespace forkd::sandbox {
namespace {

TEST(UidRangeTest, ParsesFirstDashLast) {
  auto p = ParseUidRange("100000-165535");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->uid_first, 100000u);
  EXPECT_EQ(p->uid_count, 65536u);
  auto one = ParseUidRange("7-7");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->uid_count, 1u);
}

TEST(UidRangeTest, RefusesRootReversedAndGarbage) {
  for (const char* bad : {"0-10", "10-9", "10", "-5", "a-b", "1-", "1-2-3", ""}) {
    EXPECT_FALSE(ParseUidRange(bad).ok()) << bad;
  }
}

TEST(UidPoolTest, HandsOutDistinctUidsUntilTheRangeIsUsedUp) {
  UidPool pool(JailPolicy{.enabled = true, .uid_first = 500, .uid_count = 3, .shared = false});
  std::set<uint32_t> got;
  for (int i = 0; i < 3; i++) {
    auto u = pool.Acquire();
    ASSERT_TRUE(u.ok()) << u.status();
    EXPECT_TRUE(pool.Contains(*u));
    got.insert(*u);
  }
  EXPECT_EQ(got, (std::set<uint32_t>{500, 501, 502}));
  auto none = pool.Acquire();
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  pool.Release(501);  // positive control: a released uid is handed out again
  auto again = pool.Acquire();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 501u);
}

TEST(UidPoolTest, AnAdoptedUidIsNotHandedOutTwice) {
  UidPool pool(JailPolicy{.enabled = true, .uid_first = 500, .uid_count = 2, .shared = false});
  pool.MarkUsed(500);
  auto u = pool.Acquire();
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(*u, 501u);
  EXPECT_FALSE(pool.Acquire().ok());
}

TEST(UidPoolTest, SharedGivesEveryVmTheSameUid) {
  UidPool pool(JailPolicy{.enabled = true, .uid_first = 900, .uid_count = 1, .shared = true});
  EXPECT_EQ(*pool.Acquire(), 900u);
  EXPECT_EQ(*pool.Acquire(), 900u);
}

TEST(JailArgsTest, NamesRootUidGidAndTheSnapshotDirectory) {
  const VmmJail j = JailLayout("/d/sandboxes/k", 4242);
  EXPECT_EQ(JailArgs(JailPolicy{}, j),
            (std::vector<std::string>{"--jail-root", "/d/sandboxes/k/jail", "--jail-uid", "4242",
                                      "--jail-gid", "4242", "--jail-rw", "/d/sandboxes/k/snap",
                                      "--keep-fd", "4"}));
  JailPolicy off;
  off.enabled = false;
  EXPECT_EQ(JailArgs(off, j), std::vector<std::string>{"--no-jail"});
}

}  // namespace
}  // namespace forkd::sandbox
