#include "agent/files.h"

#include <sys/stat.h>

#include "agent/tests/test_util.h"
#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

using testing::TempDir;

TEST(FilesTest, WriteThenReadRoundTripsWithMode) {
  TempDir dir;
  v1::WriteFileRequest w;
  w.set_path(dir.Path("f"));
  w.set_data(std::string("bin\0ary", 7));
  w.set_mode(0600);
  EXPECT_EQ(WriteFile(w).error(), "");
  struct stat st {};
  ASSERT_EQ(::stat(w.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  v1::ReadFileRequest r;
  r.set_path(w.path());
  auto got = ReadFile(r);
  EXPECT_EQ(got.error(), "");
  EXPECT_EQ(got.data(), w.data());
  EXPECT_FALSE(got.truncated());
}

TEST(FilesTest, ReadHonoursMaxBytes) {
  TempDir dir;
  testing::WriteString(dir.Path("f"), "0123456789");
  v1::ReadFileRequest r;
  r.set_path(dir.Path("f"));
  r.set_max_bytes(4);
  auto got = ReadFile(r);
  EXPECT_EQ(got.data(), "0123");
  EXPECT_TRUE(got.truncated());
  r.set_max_bytes(10);
  got = ReadFile(r);
  EXPECT_EQ(got.data(), "0123456789");
  EXPECT_FALSE(got.truncated());
}

TEST(FilesTest, ReportsErrors) {
  TempDir dir;
  v1::ReadFileRequest r;
  r.set_path(dir.Path("missing"));
  EXPECT_NE(ReadFile(r).error().find("ENOENT"), std::string::npos);

  v1::WriteFileRequest w;
  w.set_path(dir.Path("no/such/dir/f"));
  EXPECT_NE(WriteFile(w).error().find("ENOENT"), std::string::npos);

  w.set_path(dir.Path("big"));
  w.set_data(std::string(kMaxFileBytes + 1, 'x'));
  EXPECT_NE(WriteFile(w).error(), "");
  struct stat st {};
  EXPECT_NE(::stat(w.path().c_str(), &st), 0) << "an oversize write must not create the file";
}

}  // namespace
}  // namespace forkd::agent
