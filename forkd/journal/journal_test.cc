#include "forkd/journal/journal.h"

#include <fstream>

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace forkd::journal {
namespace {

TEST(JournalTest, PutReplacesAndRemoveDeletes) {
  forkd::testing::TempDir tmp("forkd_journal");
  auto j = Journal::Open(tmp.path() / "j");
  ASSERT_TRUE(j.ok()) << j.status();
  ASSERT_TRUE(j->Put("a", {{"state", "starting"}}).ok());
  ASSERT_TRUE(j->Put("a", {{"state", "ready"}}).ok());
  ASSERT_TRUE(j->Put("b", {{"state", "starting"}}).ok());
  auto all = j->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  for (const auto& [key, rec] : *all) {
    if (key == "a") {
      EXPECT_EQ(rec["state"], "ready");
    }
  }
  ASSERT_TRUE(j->Remove("a").ok());
  ASSERT_TRUE(j->Remove("a").ok());  // already gone: not an error
  all = j->LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().first, "b");
}

TEST(JournalTest, InterruptedWriteLeavesTheOldRecordAndNoTemporary) {
  forkd::testing::TempDir tmp("forkd_journal");
  {
    auto j = Journal::Open(tmp.path());
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE(j->Put("a", {{"v", 1}}).ok());
  }
  // A crash between the temporary write and the rename.
  std::ofstream(tmp.path() / "a.json.tmp") << "{\"v\":";
  auto j = Journal::Open(tmp.path());
  ASSERT_TRUE(j.ok());
  EXPECT_FALSE(std::filesystem::exists(tmp.path() / "a.json.tmp"));
  auto all = j->LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().second["v"], 1);
}

TEST(JournalTest, CorruptRecordIsAnErrorNamingIt) {
  forkd::testing::TempDir tmp("forkd_journal");
  auto j = Journal::Open(tmp.path());
  ASSERT_TRUE(j.ok());
  std::ofstream(tmp.path() / "x.json") << "not json";
  auto all = j->LoadAll();
  ASSERT_FALSE(all.ok());
  EXPECT_NE(all.status().message().find("x.json"), std::string_view::npos);
}

}  // namespace
}  // namespace forkd::journal
