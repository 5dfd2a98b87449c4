#include "kernel-stage/pinned_file.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/temp_dir.h"

namespace forkd::kernel_stage {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
}

Sha256Digest DigestOf(const std::string& s) {
  return Sha256({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

class PinnedFileTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  std::string path_ = (dir_.path() / "vmlinux").string();
  std::string good_ = std::string(100000, 'k') + "kernel";
};

TEST_F(PinnedFileTest, OpenRefusesAMismatchNamingBothDigests) {
  WriteFile(path_, good_);
  const Sha256Digest wrong = DigestOf("another kernel");
  auto f = PinnedFile::Open(path_, wrong);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsPinMismatch(f.status()));
  EXPECT_THAT(std::string(f.status().message()),
              AllOf(HasSubstr(path_), HasSubstr("expected " + HexDigest(wrong)),
                    HasSubstr("actual " + HexDigest(DigestOf(good_)))));
  // Positive control: the right digest opens.
  EXPECT_TRUE(PinnedFile::Open(path_, DigestOf(good_)).ok());
}

TEST_F(PinnedFileTest, VerifyUsesTheCacheOnlyWhileTheFileIsUnchanged) {
  WriteFile(path_, good_);
  auto f = PinnedFile::Open(path_, DigestOf(good_));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->hash_count(), 1);
  ASSERT_TRUE(f->Verify().ok());
  ASSERT_TRUE(f->Verify().ok());
  EXPECT_EQ(f->hash_count(), 1) << "an unchanged file was re-hashed";

  // Same size, same mtime restored: ctime still moves, so the swap is seen and hashed.
  struct stat before {};
  ASSERT_EQ(::stat(path_.c_str(), &before), 0);
  std::string evil = good_;
  evil[500] = 'X';
  WriteFile(path_, evil);
  const timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, path_.c_str(), times, 0), 0);
  absl::Status st = f->Verify();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(std::string(st.message()),
              AllOf(HasSubstr(path_), HasSubstr("expected " + HexDigest(DigestOf(good_))),
                    HasSubstr("actual " + HexDigest(DigestOf(evil)))));
  EXPECT_EQ(f->hash_count(), 2);
  // A failed file is never cached: it is hashed again each time.
  EXPECT_FALSE(f->Verify().ok());
  EXPECT_EQ(f->hash_count(), 3);

  // Put the good bytes back through a rename (a new inode): verified again.
  const std::string staged = path_ + ".new";
  WriteFile(staged, good_);
  ASSERT_EQ(::rename(staged.c_str(), path_.c_str()), 0);
  EXPECT_TRUE(f->Verify().ok());
  EXPECT_EQ(f->hash_count(), 4);
  EXPECT_TRUE(f->Verify().ok());
  EXPECT_EQ(f->hash_count(), 4);
}

TEST_F(PinnedFileTest, ReplacedByRenameWithOtherContentIsRefused) {
  WriteFile(path_, good_);
  auto f = PinnedFile::Open(path_, DigestOf(good_));
  ASSERT_TRUE(f.ok()) << f.status();
  const std::string other = path_ + ".other";
  WriteFile(other, "a different kernel");
  ASSERT_EQ(::rename(other.c_str(), path_.c_str()), 0);
  EXPECT_EQ(f->Verify().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(PinnedFileTest, RemovedFileIsAnError) {
  WriteFile(path_, good_);
  auto f = PinnedFile::Open(path_, DigestOf(good_));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  absl::Status st = f->Verify();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr(path_));
}

}  // namespace
}  // namespace forkd::kernel_stage
