// sandbox::SealSnapshotDir on what an unprivileged writer (a jailed VMM's
// uid) may leave in its snapshot directory: a symlink or a hard link to a
// file it could never change itself must be refused, never followed, and
// leave that file as it was. Positive control: a clean directory of the
// same shape seals (root's, 0755 directories, 0644 files).
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "forkd/sandbox/jail_args.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"
#include "tests/support/temp_dir.h"

FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);  // chown needs root

namespace forkd::sandbox {
namespace {

namespace fs = std::filesystem;
constexpr uid_t kWriter = 100000;  // the jailed VMM's uid

struct Owned {
  uid_t uid;
  gid_t gid;
  mode_t mode;
};
Owned Lstat(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return {st.st_uid, st.st_gid, st.st_mode & 07777};
}

void WriteAs(const fs::path& p, uid_t uid, mode_t mode) {
  std::ofstream(p) << "state";
  ASSERT_EQ(::chown(p.c_str(), uid, uid), 0);
  ASSERT_EQ(::chmod(p.c_str(), mode), 0);
}

// A snapshot directory as a jailed VMM leaves it: its uid's, 0700/0600.
fs::path WriterDir(const fs::path& base) {
  const fs::path snap = base / "snap";
  fs::create_directories(snap / "devices");
  WriteAs(snap / "memory", kWriter, 0600);
  WriteAs(snap / "devices" / "vsock", kWriter, 0600);
  for (const fs::path& d : {snap, snap / "devices"}) {
    EXPECT_EQ(::chown(d.c_str(), kWriter, kWriter), 0);
    EXPECT_EQ(::chmod(d.c_str(), 0700), 0);
  }
  return snap;
}

TEST(SealSnapshotDir, ACleanDirectoryBecomesRootsAndReadOnly) {
  testing::TempDir tmp("forkd_seal");
  const fs::path snap = WriterDir(tmp.path());
  ASSERT_TRUE(SealSnapshotDir(snap).ok());
  for (const fs::path& d : {snap, snap / "devices"}) {
    const Owned o = Lstat(d);
    EXPECT_EQ(o.uid, 0u) << d;
    EXPECT_EQ(o.gid, 0u) << d;
    EXPECT_EQ(o.mode, 0755u) << d;
  }
  for (const fs::path& f : {snap / "memory", snap / "devices" / "vsock"}) {
    const Owned o = Lstat(f);
    EXPECT_EQ(o.uid, 0u) << f;
    EXPECT_EQ(o.mode, 0644u) << f;
  }
}

// What the writer may plant, each next to a victim it must not get changed:
// a file owned by another uid, mode 0600 (as /etc/shadow would be).
TEST(SealSnapshotDir, RefusesSymlinksAndHardLinksWithoutTouchingTheirTargets) {
  struct Plant {
    std::string name;
    // Plants in `snap` something that reaches `victim`.
    void (*plant)(const fs::path& snap, const fs::path& victim);
  };
  const Plant plants[] = {
      {"symlink to a file",
       [](const fs::path& snap, const fs::path& victim) {
         fs::create_symlink(victim, snap / "memory.link");
       }},
      {"symlink in a subdirectory",
       [](const fs::path& snap, const fs::path& victim) {
         fs::create_symlink(victim, snap / "devices" / "net");
       }},
      {"symlink to a directory",
       [](const fs::path& snap, const fs::path& victim) {
         fs::create_directory_symlink(victim.parent_path(), snap / "devices" / "up");
       }},
      {"hard link",
       [](const fs::path& snap, const fs::path& victim) {
         fs::create_hard_link(victim, snap / "devices" / "rng");
       }},
      {"the directory itself a symlink",
       [](const fs::path& snap, const fs::path& victim) {
         fs::remove_all(snap);
         fs::create_directory_symlink(victim.parent_path(), snap);
       }},
      {"a fifo",
       [](const fs::path& snap, const fs::path&) {
         ASSERT_EQ(::mkfifo((snap / "devices" / "fifo").c_str(), 0600), 0);
       }},
  };
  for (const Plant& p : plants) {
    SCOPED_TRACE(p.name);
    testing::TempDir tmp("forkd_seal");
    const fs::path outside = tmp.path() / "outside";
    fs::create_directories(outside);
    const fs::path victim = outside / "secret";
    WriteAs(victim, 4242, 0600);
    ASSERT_EQ(::chmod(outside.c_str(), 0700), 0);
    const fs::path snap = WriterDir(tmp.path());
    p.plant(snap, victim);
    const absl::Status s = SealSnapshotDir(snap);
    EXPECT_FALSE(s.ok()) << "sealed a directory holding a " << p.name;
    const Owned v = Lstat(victim), o = Lstat(outside);
    EXPECT_EQ(v.uid, 4242u) << s;
    EXPECT_EQ(v.mode, 0600u) << s;
    EXPECT_EQ(o.mode, 0700u) << s;
  }
}

}  // namespace
}  // namespace forkd::sandbox
