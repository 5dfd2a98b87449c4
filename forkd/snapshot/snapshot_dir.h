// A snapshot on disk is one directory holding three files:
//   memory    raw guest memory, written by the VMM through its own mapping (MemoryPath). Region
//             placement inside it is SnapshotHeader::memory. May be sparse.
//   state     vCPU/VM/device state (state_format.h), written by SaveSnapshot.
//   manifest  hashes of both (manifest.h), written last by SaveSnapshot: the commit point.
//
// Save, in the VMM:  pause vCPUs (immediate_exit + one KVM_RUN) -> write MemoryPath(dir)
//                    -> collect SnapshotState -> SaveSnapshot(dir, state).
// Restore:           OpenSnapshot(dir, VerifyMode::kStateOnly, HostCpuIdentity())
//                    -> mmap MemoryPath(dir) MAP_PRIVATE -> apply state.
// Import/template:   OpenSnapshot(dir, VerifyMode::kFull, ...) once.
#pragma once

#include <filesystem>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/snapshot/cpu_identity.h"
#include "forkd/snapshot/manifest.h"
#include "forkd/snapshot/state.h"

namespace forkd::snapshot {

inline constexpr char kMemoryFileName[] = "memory";
inline constexpr char kStateFileName[] = "state";
inline constexpr char kManifestFileName[] = "manifest";

inline std::filesystem::path MemoryPath(const std::filesystem::path& dir) {
  return dir / kMemoryFileName;
}
inline std::filesystem::path StatePath(const std::filesystem::path& dir) {
  return dir / kStateFileName;
}
inline std::filesystem::path ManifestPath(const std::filesystem::path& dir) {
  return dir / kManifestFileName;
}

// Header-level restore check: the snapshot's format version is ours and its CPU identity is
// compatible with `host` (cpu_identity.h). FAILED_PRECONDITION otherwise.
absl::Status CheckCompatible(const SnapshotHeader& header, const CpuIdentity& host);

// Writes dir/state then dir/manifest (both atomically). dir/memory must already be complete
// and large enough for state.header.memory. A stale manifest from an earlier save is removed
// first, so a crash mid-save never leaves an old manifest vouching for a mix.
absl::Status SaveSnapshot(const std::filesystem::path& dir, const SnapshotState& state);

struct OpenedSnapshot {
  SnapshotState state;
  std::filesystem::path memory_path;
  uint64_t memory_size = 0;  // bytes in the memory file (== manifest memory_size)
};

// Verifies the manifest (per `mode`), parses the exact state bytes that were hashed (no
// re-read), checks the memory layout fits the memory file and CheckCompatible(header, host).
absl::StatusOr<OpenedSnapshot> OpenSnapshot(const std::filesystem::path& dir, VerifyMode mode,
                                            const CpuIdentity& host);

}  // namespace forkd::snapshot
