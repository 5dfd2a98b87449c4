#include "forkd/snapshot/snapshot_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "forkd/snapshot/manifest_internal.h"
#include "forkd/snapshot/state_format.h"
#include "forkd/snapshot/test_states.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forkd::snapshot {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1024 * 1024;

class SnapshotDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::path(::testing::TempDir()) /
        ("snapdir_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    state_ = testing::RandomState(11);
    host_ = state_.header.cpu;
  }

  // 5 MiB + 8 KiB of memory, so the last 2 MiB chunk is short. Chunk 1 is left entirely as a
  // hole and chunk 0 has 4 KiB holes scattered through it, to exercise both hole shortcuts.
  void WriteMemory(uint64_t size = 5 * kMiB + 8192) {
    UniqueFd fd(::open(MemoryPath(dir_).c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
    std::mt19937 rng(1);
    std::vector<uint8_t> page(4096);
    for (uint64_t off = 0; off < size; off += 4096) {
      if (off >= 2 * kMiB && off < 4 * kMiB) continue;        // a whole chunk of hole
      if (off < 2 * kMiB && (off / 4096) % 7 == 3) continue;  // holes inside chunk 0
      for (auto& b : page) b = static_cast<uint8_t>(rng());
      ASSERT_EQ(::pwrite(fd.get(), page.data(), std::min<uint64_t>(4096, size - off),
                         static_cast<off_t>(off)),
                static_cast<ssize_t>(std::min<uint64_t>(4096, size - off)));
    }
  }

  void FlipBit(const std::filesystem::path& p, uint64_t offset) {
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(&c, 1);
  }

  std::filesystem::path dir_;
  SnapshotState state_;
  CpuIdentity host_;
};

TEST_F(SnapshotDirTest, SaveThenOpenRoundTrips) {
  WriteMemory();
  ASSERT_TRUE(SaveSnapshot(dir_, state_).ok());
  for (VerifyMode mode : {VerifyMode::kStateOnly, VerifyMode::kFull}) {
    auto opened = OpenSnapshot(dir_, mode, host_);
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_TRUE(opened->state == state_);
    EXPECT_EQ(opened->memory_path, MemoryPath(dir_));
    EXPECT_EQ(opened->memory_size, 5 * kMiB + 8192);
  }
  // Exactly the three files, no temp leftovers.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    names.push_back(e.path().filename());
  }
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("memory", "state", "manifest"));
}

TEST_F(SnapshotDirTest, FlippedBitInMemoryNamesTheChunk) {
  WriteMemory();
  ASSERT_TRUE(SaveSnapshot(dir_, state_).ok());
  FlipBit(MemoryPath(dir_), 4 * kMiB + 123);  // chunk 2
  absl::Status s = VerifyManifest(dir_, VerifyMode::kFull);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("memory chunk 2 (bytes 4194304..5251072): SHA-256 mismatch"));
  EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr("more chunks differ")));
  // The documented trade-off: state-only verification does not read memory.
  EXPECT_TRUE(VerifyManifest(dir_, VerifyMode::kStateOnly).ok());
  EXPECT_FALSE(OpenSnapshot(dir_, VerifyMode::kFull, host_).ok());
}

TEST_F(SnapshotDirTest, DataWrittenIntoAHoleIsDetected) {
  WriteMemory();
  ASSERT_TRUE(SaveSnapshot(dir_, state_).ok());
  FlipBit(MemoryPath(dir_), 2 * kMiB + 5);     // chunk 1 was a hole
  FlipBit(MemoryPath(dir_), 5 * kMiB + 8000);  // last, short chunk
  absl::Status s = VerifyManifest(dir_, VerifyMode::kFull);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("memory chunk 1 (bytes 2097152..4194304): SHA-256 mismatch"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("1 more chunks differ"));
}

TEST_F(SnapshotDirTest, HoleShortcutHashesLikeReadingZeros) {
  WriteMemory();
  const uint64_t size = 5 * kMiB + 8192;
  UniqueFd sparse(::open(MemoryPath(dir_).c_str(), O_RDONLY));
  // The same bytes with the hole materialised as real zeros.
  std::vector<uint8_t> all(size);
  ASSERT_EQ(::pread(sparse.get(), all.data(), size, 0), static_cast<ssize_t>(size));
  const auto dense_path = dir_ / "dense";
  {
    std::ofstream f(dense_path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(all.data()), static_cast<std::streamsize>(size));
  }
  UniqueFd dense(::open(dense_path.c_str(), O_RDONLY));
  auto a = HashMemoryFile(sparse.get(), size, kDefaultChunkSize, "sparse");
  auto b = HashMemoryFile(dense.get(), size, kDefaultChunkSize, "dense");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), 3u);
  EXPECT_EQ(*a, *b);
  EXPECT_EQ((*a)[2], Sha256(std::span(all).subspan(4 * kMiB)));
}

TEST_F(SnapshotDirTest, ChangedStateIsRefused) {
  WriteMemory();
  ASSERT_TRUE(SaveSnapshot(dir_, state_).ok());
  FlipBit(StatePath(dir_), 200);
  auto r = OpenSnapshot(dir_, VerifyMode::kStateOnly, host_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("state SHA-256 mismatch"));
}

TEST_F(SnapshotDirTest, ChangedGuestPinIsRefusedByTheManifest) {
  // The pin lives in the HEADER section (kernel digest at byte 48, pin_flags at 112; see
  // state_format_test.cc): turning an unpinned snapshot into a pinned one, or changing its kernel
  // digest, breaks the state hash like any other edit.
  for (const uint64_t offset : {48, 112}) {
    WriteMemory();
    ASSERT_TRUE(SaveSnapshot(dir_, state_).ok());
    ASSERT_TRUE(OpenSnapshot(dir_, VerifyMode::kStateOnly, host_).ok());  // positive control
    FlipBit(StatePath(dir_), offset);
    auto r = OpenSnapshot(dir_, VerifyMode::kStateOnly, host_);
    ASSERT_FALSE(r.ok()) << offset;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("state SHA-256 mismatch"));
  }
}

TEST_F(SnapshotDirTest, ResizedMemoryIsRefusedEvenInStateOnlyMode) {
  WriteMemory();
  ASSERT_TRUE(SaveSnapshot(dir_, state_).ok());
  std::filesystem::resize_file(MemoryPath(dir_), 4 * kMiB);
  absl::Status s = VerifyManifest(dir_, VerifyMode::kStateOnly);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("memory is 4194304 bytes, manifest says 5251072"));
}

TEST_F(SnapshotDirTest, MissingManifestMeansIncomplete) {
  WriteMemory();
  ASSERT_TRUE(WriteState(StatePath(dir_), state_).ok());  // crashed before the manifest
  auto r = OpenSnapshot(dir_, VerifyMode::kStateOnly, host_);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("no readable manifest (incomplete"));
}

TEST_F(SnapshotDirTest, ResaveRemovesTheOldManifestFirst) {
  WriteMemory();
  ASSERT_TRUE(SaveSnapshot(dir_, state_).ok());
  // A save that fails after starting must not leave the old manifest vouching for the dir.
  SnapshotState bad = state_;
  bad.header.vcpu_count = 3;
  ASSERT_FALSE(SaveSnapshot(dir_, bad).ok());
  EXPECT_FALSE(std::filesystem::exists(ManifestPath(dir_)));
}

TEST_F(SnapshotDirTest, LayoutLargerThanMemoryFileIsRefused) {
  WriteMemory(512 * 1024);  // layout needs 1 MiB
  absl::Status save = SaveSnapshot(dir_, state_);
  EXPECT_EQ(save.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(save.message()), HasSubstr("larger than the memory file"));
  // Bypass the writer's check: OpenSnapshot must still refuse.
  ASSERT_TRUE(WriteState(StatePath(dir_), state_).ok());
  ASSERT_TRUE(WriteManifest(dir_).ok());
  auto r = OpenSnapshot(dir_, VerifyMode::kFull, host_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("memory region 0 (file bytes 0..786432) is larger than the memory file "
                        "(524288 bytes)"));
}

TEST_F(SnapshotDirTest, OtherCpuIsRefused) {
  WriteMemory();
  ASSERT_TRUE(SaveSnapshot(dir_, state_).ok());
  CpuIdentity other = host_;
  other.model += 1;
  auto r = OpenSnapshot(dir_, VerifyMode::kStateOnly, other);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("different CPU: model is 85"));
}

TEST_F(SnapshotDirTest, FifoInPlaceOfStateIsRefusedWithoutBlocking) {
  WriteMemory();
  ASSERT_TRUE(SaveSnapshot(dir_, state_).ok());
  std::filesystem::remove(StatePath(dir_));
  ASSERT_EQ(::mkfifo(StatePath(dir_).c_str(), 0600), 0);
  auto r = OpenSnapshot(dir_, VerifyMode::kStateOnly, host_);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not a regular file"));
}

TEST(Manifest, SerializeParseRoundTrips) {
  Manifest m;
  m.format_version = kFormatVersion;
  m.chunk_size = 4096;
  m.state_size = 77;
  m.state_sha256 = Sha256(std::vector<uint8_t>{1, 2, 3});
  m.memory_size = 3 * 4096 + 1;
  for (int i = 0; i < 4; ++i) m.memory_chunks.push_back(Sha256(std::vector<uint8_t>(i, 9)));
  auto back = ParseManifest(SerializeManifest(m));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, m);
}

TEST(Manifest, KnownDigest) {
  EXPECT_EQ(HexDigest(Sha256(std::vector<uint8_t>{'a', 'b', 'c'})),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Manifest, MalformedOrForeignManifestsAreRefused) {
  Manifest m;
  m.format_version = kFormatVersion;
  m.memory_size = 3 * kMiB;
  m.memory_chunks.resize(2);
  const std::string good = SerializeManifest(m);
  ASSERT_TRUE(ParseManifest(good).ok());

  struct Case {
    std::string from, to;
    absl::StatusCode code;
    std::string message;
  };
  const Case cases[] = {
      {"forkd-snapshot-manifest", "sha256sums", absl::StatusCode::kInvalidArgument, "bad magic"},
      {"format_version 2", "format_version 3", absl::StatusCode::kFailedPrecondition,
       "format_version 3 is not supported"},
      {"format_version 2", "format_version 1", absl::StatusCode::kFailedPrecondition,
       "format_version 1 is not supported"},
      {"chunk_size 2097152", "chunk_size 3000000", absl::StatusCode::kDataLoss,
       "line 3: chunk_size 3000000 is not a power of two"},
      {"memory_chunks 2", "memory_chunks 99999999999", absl::StatusCode::kDataLoss,
       "memory_chunks 99999999999, expected 2"},
      {"memory_size 3145728", "memory_size 03145728", absl::StatusCode::kDataLoss,
       "line 6: bad number for memory_size"},
      {"chunk 1 ", "chunk 7 ", absl::StatusCode::kDataLoss, "line 9: expected \"chunk 1 "},
      {"state_size 0", "state_size 99999999999999999999999", absl::StatusCode::kDataLoss,
       "bad number for state_size"},
  };
  for (const Case& c : cases) {
    std::string text = good;
    const size_t at = text.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    text.replace(at, c.from.size(), c.to);
    auto r = ParseManifest(text);
    ASSERT_FALSE(r.ok()) << c.to;
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message));
  }
  EXPECT_FALSE(ParseManifest(good + "x\n").ok());
  EXPECT_FALSE(ParseManifest(good.substr(0, good.size() - 1)).ok());  // missing final newline
  std::string upper = good;
  upper[upper.size() - 2] = 'A';  // digests are lowercase only
  EXPECT_FALSE(ParseManifest(upper).ok());
}

}  // namespace
}  // namespace forkd::snapshot
