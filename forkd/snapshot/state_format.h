// The binary encoding of the `state` file.
//
// Layout (all integers little-endian):
//   file header   magic "FORKDSNP" (8 bytes), u32 format_version, u32 reserved (0)
//   sections      u32 tag, u32 flags, u64 payload length, payload
//   ...           HEADER first (once), then VCPU x vcpu_count (ids 0..n-1 in order), VM (once),
//                 DEVICE x N (unique names), END last (empty payload, nothing after it)
// A section with flags & kSectionMandatory that this build does not know is refused; an unknown
// optional section is skipped (room for additive, ignorable data without a version bump). Other
// flag bits must be zero. END makes truncation at a section boundary detectable: a file without
// it is truncated. Each payload must be consumed exactly.
//
// Errors (status code, message prefix "state: "):
//   not a snapshot / bad magic         INVALID_ARGUMENT  "bad magic"
//   other format_version               FAILED_PRECONDITION "format_version N is not supported"
//   truncated                          DATA_LOSS         "truncated"
//   section length beyond the limit    INVALID_ARGUMENT  "section length overflow"
//   unknown mandatory section          UNIMPLEMENTED     "unknown mandatory section"
//   structural / value errors          INVALID_ARGUMENT  naming the field (vcpu_count, msr count,
//                                                        memory layout, device name, ...)
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/snapshot/state.h"

namespace forkd::snapshot {

inline constexpr char kStateMagic[8] = {'F', 'O', 'R', 'K', 'D', 'S', 'N', 'P'};
inline constexpr uint32_t kSectionMandatory = 1u << 0;
// Largest `state` file we read; real ones are ~10 KiB per vCPU plus device state.
inline constexpr uint64_t kMaxStateFileBytes = 64ull * 1024 * 1024;
// Largest single section payload (a device may hold up to kMaxDeviceStateBytes).
inline constexpr uint64_t kMaxSectionBytes = kMaxDeviceStateBytes + 4096;

enum class SectionTag : uint32_t {
  kHeader = 1,
  kVcpu = 2,
  kVm = 3,
  kDevice = 4,
  kEnd = 0xffffffff,
};

// Checks every invariant the parser enforces (vCPU count, MSR count, XSAVE size, memory layout,
// device names). SerializeState refuses a state that fails it, so we never write a file we
// would refuse to read.
absl::Status ValidateState(const SnapshotState& state);

// Encodes `state` (after ValidateState).
absl::StatusOr<std::vector<uint8_t>> SerializeState(const SnapshotState& state);

// Decodes and validates a `state` file. Pure: no I/O, safe on any input (this is the fuzz target).
absl::StatusOr<SnapshotState> ParseState(std::span<const uint8_t> bytes);

// Serializes and writes `path` atomically (temp file, fsync, rename, fsync dir).
absl::Status WriteState(const std::filesystem::path& path, const SnapshotState& state);

// Reads and parses `path` (at most kMaxStateFileBytes).
absl::StatusOr<SnapshotState> ReadState(const std::filesystem::path& path);

// Memory layout checks shared by the parser and by snapshot_dir (which knows the file size).
absl::Status ValidateMemoryLayout(const std::vector<MemoryRegionLayout>& layout);
// OUT_OF_RANGE naming the region when a region ends beyond `memory_file_size`.
absl::Status CheckLayoutFitsFile(const std::vector<MemoryRegionLayout>& layout,
                                 uint64_t memory_file_size);

}  // namespace forkd::snapshot
