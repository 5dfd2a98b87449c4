#include "forkd/snapshot/byte_io.h"

#include <string>
#include <vector>

#include "common/errno_status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forkd::snapshot {
namespace {

using ::testing::HasSubstr;

// What a device would do: its own State struct, encoded and decoded with the helpers.
struct RngState {
  uint16_t queue_size = 0;
  bool activated = false;
  uint64_t bytes_served = 0;
  std::vector<uint8_t> config;
  std::string backend;
  friend bool operator==(const RngState&, const RngState&) = default;
};

std::vector<uint8_t> Save(const RngState& s) {
  ByteWriter w;
  w.U16(s.queue_size);
  w.Bool(s.activated);
  w.U64(s.bytes_served);
  w.Blob(s.config);
  w.String(s.backend);
  return w.Take();
}

absl::StatusOr<RngState> Load(std::span<const uint8_t> bytes) {
  ByteReader r(bytes, "virtio-rng");
  RngState s;
  FORKD_ASSIGN_OR_RETURN(s.queue_size, r.U16("queue_size"));
  FORKD_ASSIGN_OR_RETURN(s.activated, r.Bool("activated"));
  FORKD_ASSIGN_OR_RETURN(s.bytes_served, r.U64("bytes_served"));
  FORKD_ASSIGN_OR_RETURN(s.config, r.Blob(64, "config"));
  FORKD_ASSIGN_OR_RETURN(s.backend, r.String(32, "backend"));
  FORKD_RETURN_IF_ERROR(r.Finish());
  return s;
}

RngState Sample() {
  return {.queue_size = 256,
          .activated = true,
          .bytes_served = 0x0102030405060708ull,
          .config = {9, 8, 7},
          .backend = "/dev/urandom"};
}

TEST(ByteIo, DeviceStateRoundTrips) {
  auto loaded = Load(Save(Sample()));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(*loaded, Sample());
}

TEST(ByteIo, EncodingIsLittleEndian) {
  ByteWriter w;
  w.U32(0x11223344);
  EXPECT_EQ(w.bytes(), (std::vector<uint8_t>{0x44, 0x33, 0x22, 0x11}));
}

TEST(ByteIo, EveryTruncationIsRefusedNamingTheField) {
  const std::vector<uint8_t> full = Save(Sample());
  for (size_t n = 0; n < full.size(); ++n) {
    auto r = Load(std::span(full).first(n));
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes accepted";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("virtio-rng: "));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("truncated"));
  }
  // The field is named: cutting inside bytes_served says so.
  auto r = Load(std::span(full).first(5));
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("bytes_served: truncated: needs 8 bytes at offset 3, 2 left"));
}

TEST(ByteIo, ReadingPastTheEndIsRefused) {
  const uint8_t one[] = {1};
  ByteReader r(one, "dev");
  ASSERT_TRUE(r.U8("a").ok());
  auto past = r.U8("b");
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(std::string(past.status().message()),
            "dev: b: truncated: needs 1 bytes at offset 1, 0 left");
}

TEST(ByteIo, BlobLengthAboveLimitIsRefusedBeforeAllocating) {
  ByteWriter w;
  w.U32(0xffffffff);  // claims 4 GiB, has nothing
  ByteReader r(w.bytes(), "dev");
  auto b = r.Blob(1024, "config");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(b.status().message()),
              HasSubstr("config: length 4294967295 exceeds the limit 1024"));
}

TEST(ByteIo, BlobLengthWithinLimitButBeyondInputIsTruncation) {
  ByteWriter w;
  w.U32(100);
  w.U8(1);
  ByteReader r(w.bytes(), "dev");
  auto b = r.Blob(1024, "config");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kDataLoss);
}

TEST(ByteIo, BoolOtherThanZeroOrOneIsRefused) {
  const uint8_t two[] = {2};
  ByteReader r(two, "dev");
  auto b = r.Bool("flag");
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("flag: bool value 2"));
}

TEST(ByteIo, TrailingBytesAreRefused) {
  std::vector<uint8_t> bytes = Save(Sample());
  bytes.push_back(0);
  auto r = Load(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("1 unexpected trailing bytes"));
}

TEST(ByteIo, StructSizeMismatchIsRefused) {
  struct Small {
    uint32_t a;
  };
  struct Big {
    uint64_t a, b;
  };
  ByteWriter w;
  w.Struct(Small{7});
  ByteReader r(w.bytes(), "dev");
  Big big{};
  absl::Status s = r.Struct(&big, "big");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("big: size 4, expected 16"));

  ByteReader ok_reader(w.bytes(), "dev");
  Small small{};
  ASSERT_TRUE(ok_reader.Struct(&small, "small").ok());
  EXPECT_EQ(small.a, 7u);
}

}  // namespace
}  // namespace forkd::snapshot
