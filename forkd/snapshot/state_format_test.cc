#include "forkd/snapshot/state_format.h"

#include <cstring>
#include <string>
#include <vector>

#include "forkd/snapshot/test_states.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forkd::snapshot {
namespace {

using testing::FindSection;
using ::testing::HasSubstr;
using testing::MinimalState;
using testing::PutU32;
using testing::PutU64;
using testing::RandomState;

std::vector<uint8_t> Encode(const SnapshotState& s) {
  auto b = SerializeState(s);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : std::vector<uint8_t>{};
}

// Asserts that parsing fails with `code` and a message containing `text`.
void ExpectRefused(const std::vector<uint8_t>& bytes, absl::StatusCode code,
                   const std::string& text) {
  auto r = ParseState(bytes);
  ASSERT_FALSE(r.ok()) << "accepted; expected: " << text;
  EXPECT_EQ(r.status().code(), code) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(text));
}

TEST(StateFormat, FullyPopulatedStateRoundTripsByteForByte) {
  for (uint32_t vcpus = 1; vcpus <= kMaxVcpus; ++vcpus) {
    const SnapshotState original = RandomState(/*seed=*/100 + vcpus, vcpus, /*devices=*/4);
    const std::vector<uint8_t> bytes = Encode(original);
    auto parsed = ParseState(bytes);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(*parsed == original) << "vcpus=" << vcpus;
    // Spot-check the byte-for-byte claim directly on the raw kvm structs too.
    for (uint32_t i = 0; i < vcpus; ++i) {
      EXPECT_EQ(0,
                std::memcmp(&parsed->vcpus[i].sregs, &original.vcpus[i].sregs, sizeof(kvm_sregs)));
      EXPECT_EQ(parsed->vcpus[i].xsave, original.vcpus[i].xsave);
    }
    EXPECT_EQ(0, std::memcmp(&parsed->vm.pit, &original.vm.pit, sizeof(kvm_pit_state2)));
    EXPECT_EQ(Encode(*parsed), bytes) << "re-encoding differs";
  }
}

TEST(StateFormat, EqualityNoticesASingleByte) {
  // Guards the round-trip test above: operator== must not be vacuous.
  SnapshotState a = RandomState(7);
  SnapshotState b = a;
  ASSERT_TRUE(a == b);
  reinterpret_cast<uint8_t*>(&b.vcpus[1].lapic)[1000] ^= 1;
  EXPECT_FALSE(a == b);
  b = a;
  reinterpret_cast<uint8_t*>(&b.vm.clock)[sizeof(kvm_clock_data) - 1] ^= 0x80;
  EXPECT_FALSE(a == b);
}

TEST(StateFormat, WriteStateThenReadStateRoundTrips) {
  const std::string dir = ::testing::TempDir() + "/state_rw";
  std::filesystem::create_directories(dir);
  const SnapshotState s = RandomState(3);
  ASSERT_TRUE(WriteState(dir + "/state", s).ok());
  auto back = ReadState(dir + "/state");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == s);
  // No temp file left beside it.
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(e.path().filename(), "state");
  }
}

// HEADER payload offsets: file header (16) + section header (16), then vcpu_count (4), agent
// protocol (4), created_unix_ns (8), kernel_sha256 (32), initrd_sha256 (32), pin_flags (4).
constexpr size_t kHeaderPayload = 32;
constexpr size_t kKernelShaAt = kHeaderPayload + 16;
constexpr size_t kInitrdShaAt = kKernelShaAt + 32;
constexpr size_t kPinFlagsAt = kInitrdShaAt + 32;

TEST(StateFormat, GuestPinIsEncodedWhereDocumented) {
  SnapshotState s = MinimalState();
  s.header.kernel_sha256.fill(0xab);
  s.header.initrd_sha256.fill(0xcd);
  s.header.guest_protocol_version = 7;
  s.header.unpinned = true;
  const std::vector<uint8_t> b = Encode(s);
  ASSERT_GT(b.size(), kPinFlagsAt + 4);
  EXPECT_EQ(b[kKernelShaAt], 0xab);
  EXPECT_EQ(b[kKernelShaAt + 31], 0xab);
  EXPECT_EQ(b[kInitrdShaAt], 0xcd);
  EXPECT_EQ(b[kInitrdShaAt + 31], 0xcd);
  EXPECT_EQ(b[kPinFlagsAt], 1);
  auto back = ParseState(b);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->header.initrd_sha256, s.header.initrd_sha256);
  EXPECT_TRUE(back->header.unpinned);
  EXPECT_EQ(back->header.guest_protocol_version, 7u);
  s.header.unpinned = false;  // and the flag really comes from the file
  auto pinned = ParseState(Encode(s));
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_FALSE(pinned->header.unpinned);
}

TEST(StateFormat, UnknownPinFlagBitsAreRefused) {
  std::vector<uint8_t> b = Encode(MinimalState());
  PutU32(b, kPinFlagsAt, 2);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "pin_flags 0x2 has unknown bits");
  PutU32(b, kPinFlagsAt, 1);  // positive control: the one known bit parses
  EXPECT_TRUE(ParseState(b).ok());
}

TEST(StateFormat, BadMagicIsRefused) {
  std::vector<uint8_t> b = Encode(MinimalState());
  b[0] = 'X';
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "bad magic");
  ExpectRefused({'E', 'L', 'F'}, absl::StatusCode::kInvalidArgument, "bad magic");
}

TEST(StateFormat, OtherFormatVersionsAreRefused) {
  std::vector<uint8_t> b = Encode(MinimalState());
  PutU32(b, 8, kFormatVersion + 1);
  ExpectRefused(b, absl::StatusCode::kFailedPrecondition,
                "format_version 3 is not supported (this build reads 2; snapshot is newer)");
  // Version 1 had no initrd digest or pin flags: a snapshot from before the guest pin is refused,
  // never read with a guessed pin.
  PutU32(b, 8, 1);
  ExpectRefused(b, absl::StatusCode::kFailedPrecondition,
                "format_version 1 is not supported (this build reads 2; snapshot is older)");
  PutU32(b, 8, 0);
  ExpectRefused(b, absl::StatusCode::kFailedPrecondition, "snapshot is older");
}

TEST(StateFormat, TruncationAtEveryOffsetIsRefused) {
  const std::vector<uint8_t> b = Encode(MinimalState());
  ASSERT_GT(b.size(), 5000u);
  for (size_t n = 0; n < b.size(); ++n) {
    auto r = ParseState(std::span(b).first(n));
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes accepted";
    ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << n << ": " << r.status();
    ASSERT_THAT(std::string(r.status().message()), HasSubstr("truncated")) << n;
  }
  EXPECT_TRUE(ParseState(b).ok());
}

TEST(StateFormat, SectionLengthOverflowIsRefused) {
  std::vector<uint8_t> b = Encode(MinimalState());
  auto vm = FindSection(b, SectionTag::kVm);
  PutU64(b, vm.header_offset + 8, ~0ull);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "section length overflow: section VM");
  PutU64(b, vm.header_offset + 8, kMaxSectionBytes + 1);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "section length overflow");
}

TEST(StateFormat, PayloadLongerThanItsFieldsIsRefused) {
  // A section whose length is right for the file but wrong for its contents: END moves.
  std::vector<uint8_t> b = Encode(MinimalState());
  auto dev = FindSection(b, SectionTag::kDevice);
  PutU64(b, dev.header_offset + 8, dev.length + 16);  // swallow END as device payload
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "unexpected trailing bytes");
}

std::vector<uint8_t> WithExtraSection(const std::vector<uint8_t>& file, uint32_t tag,
                                      uint32_t flags) {
  auto end = FindSection(file, SectionTag::kEnd);
  std::vector<uint8_t> out(file.begin(), file.begin() + static_cast<long>(end.header_offset));
  std::vector<uint8_t> sec(16 + 5, 0xee);
  std::memcpy(sec.data(), &tag, 4);
  std::memcpy(sec.data() + 4, &flags, 4);
  uint64_t len = 5;
  std::memcpy(sec.data() + 8, &len, 8);
  out.insert(out.end(), sec.begin(), sec.end());
  out.insert(out.end(), file.begin() + static_cast<long>(end.header_offset), file.end());
  return out;
}

TEST(StateFormat, UnknownMandatorySectionIsRefused) {
  const std::vector<uint8_t> b = WithExtraSection(Encode(MinimalState()), 0x77, kSectionMandatory);
  ExpectRefused(b, absl::StatusCode::kUnimplemented,
                "unknown mandatory section unknown (tag 0x77)");
}

TEST(StateFormat, UnknownOptionalSectionIsSkipped) {
  const SnapshotState s = MinimalState();
  auto r = ParseState(WithExtraSection(Encode(s), 0x77, 0));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(*r == s);
}

TEST(StateFormat, UnknownSectionFlagsAreRefused) {
  ExpectRefused(WithExtraSection(Encode(MinimalState()), 0x77, 0x2),
                absl::StatusCode::kInvalidArgument, "unknown flags 0x2");
}

TEST(StateFormat, VcpuCountOutOfRangeIsRefused) {
  std::vector<uint8_t> b = Encode(MinimalState());
  const size_t count_at = FindSection(b, SectionTag::kHeader).payload_offset;
  PutU32(b, count_at, 0);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "vcpu_count 0 is out of range 1..4");
  PutU32(b, count_at, 5);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "vcpu_count 5 is out of range 1..4");
}

TEST(StateFormat, VcpuCountNotMatchingSectionsIsRefused) {
  std::vector<uint8_t> one = Encode(MinimalState());
  PutU32(one, FindSection(one, SectionTag::kHeader).payload_offset, 2);
  ExpectRefused(one, absl::StatusCode::kInvalidArgument,
                "vcpu_count is 2 but there are 1 VCPU sections");

  std::vector<uint8_t> two = Encode(RandomState(1, /*vcpus=*/2));
  PutU32(two, FindSection(two, SectionTag::kHeader).payload_offset, 1);
  ExpectRefused(two, absl::StatusCode::kInvalidArgument,
                "vcpu_count is 1 but there are more VCPU sections");
}

TEST(StateFormat, VcpuSectionsOutOfOrderAreRefused) {
  std::vector<uint8_t> b = Encode(RandomState(1, /*vcpus=*/2));
  PutU32(b, FindSection(b, SectionTag::kVcpu, 1).payload_offset, 0);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "vcpu id 0, expected 1");
}

// Offset of the MSR count inside the first VCPU section.
size_t MsrCountOffset(const std::vector<uint8_t>& b) {
  const size_t p = FindSection(b, SectionTag::kVcpu).payload_offset;
  uint32_t xsave_len;
  const size_t xsave_at =
      p + 4 + (4 + sizeof(kvm_regs)) + (4 + sizeof(kvm_sregs)) + (4 + sizeof(kvm_fpu));
  std::memcpy(&xsave_len, b.data() + xsave_at, 4);
  return xsave_at + 4 + xsave_len + 4 + sizeof(kvm_xcrs);
}

TEST(StateFormat, AbsurdMsrCountIsRefused) {
  std::vector<uint8_t> b = Encode(RandomState(5, 1));
  const size_t at = MsrCountOffset(b);
  uint32_t real;
  std::memcpy(&real, b.data() + at, 4);
  ASSERT_EQ(real, 40u);  // proves MsrCountOffset points at the count
  PutU32(b, at, 0xffffffff);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "msr count 4294967295 exceeds the limit");
  PutU32(b, at, kMaxMsrs);  // allowed count, but more entries than the section holds
  ExpectRefused(b, absl::StatusCode::kDataLoss, "msr count 1024 needs 12288 bytes");
}

TEST(StateFormat, XsaveSizeOutOfRangeIsRefused) {
  SnapshotState s = MinimalState();
  s.vcpus[0].xsave.resize(100);
  auto r = SerializeState(s);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("vcpu 0: xsave size 100 is neither 0 nor in 4096..65536"));
}

// Offset of region `i`'s guest_phys_addr in the HEADER payload (regions close the payload).
size_t RegionOffset(const std::vector<uint8_t>& b, size_t regions, size_t i) {
  auto h = FindSection(b, SectionTag::kHeader);
  return h.payload_offset + h.length - 24 * (regions - i);
}

TEST(StateFormat, MemoryLayoutProblemsAreRefused) {
  const SnapshotState s = RandomState(9);  // regions [0,0xc0000)@0 and [0x100000,+0x40000)@0xc0000
  const std::vector<uint8_t> good = Encode(s);
  {
    std::vector<uint8_t> b = good;
    PutU64(b, RegionOffset(b, 2, 1), 0x80000);  // guest range now overlaps region 0
    ExpectRefused(b, absl::StatusCode::kInvalidArgument,
                  "memory region 1 overlaps memory region 0 in guest-physical space");
  }
  {
    std::vector<uint8_t> b = good;
    PutU64(b, RegionOffset(b, 2, 1) + 16, 0x1000);  // file range now overlaps region 0
    ExpectRefused(b, absl::StatusCode::kInvalidArgument,
                  "memory region 1 overlaps memory region 0 in the memory file");
  }
  {
    std::vector<uint8_t> b = good;
    PutU64(b, RegionOffset(b, 2, 0) + 8, 0xc0001);  // size not page aligned
    ExpectRefused(b, absl::StatusCode::kInvalidArgument, "memory region 0: guest_phys_addr 0");
    ExpectRefused(b, absl::StatusCode::kInvalidArgument, "(unaligned)");
  }
  {
    std::vector<uint8_t> b = good;
    PutU64(b, RegionOffset(b, 2, 1), ~0ull << 12);  // end wraps around
    ExpectRefused(b, absl::StatusCode::kInvalidArgument, "memory region 1: end overflows");
  }
  {
    std::vector<uint8_t> b = good;
    PutU64(b, RegionOffset(b, 2, 0) + 8, 0);
    ExpectRefused(b, absl::StatusCode::kInvalidArgument, "memory region 0: size is 0");
  }
  // Larger than the memory file: checked against the file size the caller knows.
  EXPECT_TRUE(CheckLayoutFitsFile(s.header.memory, 0x100000).ok());
  absl::Status too_big = CheckLayoutFitsFile(s.header.memory, 0xfffff);
  EXPECT_EQ(too_big.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(too_big.message()),
              HasSubstr("memory region 1 (file bytes 786432..1048576) is larger than the memory "
                        "file (1048575 bytes)"));
}

TEST(StateFormat, DeviceNamesAreValidatedAndUnique) {
  SnapshotState s = MinimalState();
  s.devices.push_back({.name = "serial0", .bytes = {}});
  auto dup = SerializeState(s);
  ASSERT_FALSE(dup.ok());
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("\"serial0\" appears twice"));

  s.devices.back().name = "../etc";
  auto bad = SerializeState(s);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("device name \"../etc\" is not"));

  // And the parser refuses a duplicate that a hand-made file smuggles in.
  SnapshotState two = MinimalState();
  two.devices.push_back({.name = "serial1", .bytes = {1, 2, 3}});
  std::vector<uint8_t> b = Encode(two);
  auto second = FindSection(b, SectionTag::kDevice, 1);
  b[second.payload_offset + 4 + 6] = '0';  // "serial1" -> "serial0"
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "\"serial0\" appears twice");
}

TEST(StateFormat, SectionsOutOfPlaceAreRefused) {
  std::vector<uint8_t> b = Encode(MinimalState());
  PutU32(b, FindSection(b, SectionTag::kHeader).header_offset,
         static_cast<uint32_t>(SectionTag::kVm));
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, "before the HEADER section");

  std::vector<uint8_t> trailing = Encode(MinimalState());
  trailing.push_back(0);
  ExpectRefused(trailing, absl::StatusCode::kInvalidArgument, "1 trailing bytes after the END");
}

TEST(StateFormat, WrongIrqchipIdIsRefused) {
  SnapshotState s = MinimalState();
  s.vm.pic_slave.chip_id = KVM_IRQCHIP_IOAPIC;
  auto r = SerializeState(s);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("pic_slave.chip_id is 2, expected 1"));
}

TEST(StateFormat, WriterRefusesWhatTheReaderWould) {
  SnapshotState s = MinimalState();
  s.header.vcpu_count = 2;
  auto r = SerializeState(s);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("vcpu_count is 2 but there are 1"));
  s = MinimalState();
  s.vcpus[0].msrs.resize(kMaxMsrs + 1);
  r = SerializeState(s);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("msr count 1025 exceeds the limit"));
}

}  // namespace
}  // namespace forkd::snapshot
