#include "agent/initramfs/newc.h"

#include <sys/stat.h>

#include "gtest/gtest.h"

namespace forkd::agent::initramfs {
namespace {

TEST(NewcTest, RoundTripsEveryEntryKind) {
  const std::vector<Entry> in = {
      Directory("bin"),
      CharDevice("dev/console", 5, 1, 0600),
      File("init",
           std::string("\x7f"
                       "ELF\0odd-length",
                       15),
           0755),
      Symlink("bin/sh", "busybox"),
      File("empty", "", 0644),
  };
  const std::string archive = WriteNewc(in);
  EXPECT_EQ(archive.size() % 4, 0u);
  EXPECT_EQ(archive.compare(0, 6, "070701"), 0);
  auto out = ReadNewc(archive);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ((*out)[i].name, in[i].name);
    EXPECT_EQ((*out)[i].mode, in[i].mode) << in[i].name;
    EXPECT_EQ((*out)[i].data, in[i].data) << in[i].name;
    EXPECT_EQ((*out)[i].rdev_major, in[i].rdev_major) << in[i].name;
    EXPECT_EQ((*out)[i].rdev_minor, in[i].rdev_minor) << in[i].name;
  }
  EXPECT_TRUE(S_ISCHR((*out)[1].mode));
  EXPECT_TRUE(S_ISLNK((*out)[3].mode));
}

TEST(NewcTest, IsReproducible) {
  const std::vector<Entry> in = {File("init", "x", 0755)};
  EXPECT_EQ(WriteNewc(in), WriteNewc(in));
}

TEST(NewcTest, RejectsTruncatedArchives) {
  const std::string archive = WriteNewc({File("init", "payload", 0755)});
  for (size_t cut : {size_t{0}, size_t{50}, size_t{112}, archive.size() - 4}) {
    EXPECT_FALSE(ReadNewc(archive.substr(0, cut)).ok()) << "cut at " << cut;
  }
}

}  // namespace
}  // namespace forkd::agent::initramfs
