// The `manifest` file: SHA-256 of the `state` file and of every fixed-size chunk of the `memory`
// file, plus the snapshot format version. It is written last, so its presence marks a complete
// snapshot; a crash before it leaves a directory that OpenSnapshot refuses.
//
// Text, one item per line, in this exact order (strictly parsed):
//   forkd-snapshot-manifest
//   format_version 2          (kFormatVersion, shared with the state file)
//   chunk_size 2097152
//   state_size <bytes>
//   state_sha256 <64 hex>
//   memory_size <bytes>
//   memory_chunks <n = ceil(memory_size / chunk_size)>
//   chunk <i> <64 hex>          (n lines, i = 0..n-1)
//
// Verification cost, measured here with snapshot_verify_bench (256 MiB memory file, 2 shared
// cores, no SHA-NI; SHA-256 runs at ~250-350 MiB/s):
//   OpenSnapshot kStateOnly   0.06-0.13 ms (hash of the ~20 KiB state file + memory size check)
//   OpenSnapshot kFull        ~700-800 ms dense, ~155 ms when only the first 40 MiB hold data
// Chunks entirely inside a hole of a sparse memory file are not read or hashed (their digest is
// the all-zero chunk's, computed once); holes inside a chunk are hashed as zeros without reading.
// Hence VerifyMode: kFull at snapshot import / template build / after copying a snapshot in;
// kStateOnly on every restore (the 2 ms restore budget rules out kFull). The memory file is then
// trusted as far as the snapshot directory's permissions are: keep it writable only by forkd.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernel-stage/digest.h"

namespace forkd::snapshot {

using Sha256Digest = kernel_stage::Sha256Digest;

inline constexpr uint64_t kDefaultChunkSize = 2 * 1024 * 1024;
inline constexpr uint64_t kMinChunkSize = 4096;
inline constexpr uint64_t kMaxChunkSize = 1ull << 30;
inline constexpr uint64_t kMaxMemoryFileBytes = 1ull << 40;  // 1 TiB: anything above is corrupt
inline constexpr uint64_t kMaxManifestBytes = 16 * 1024 * 1024;

struct Manifest {
  uint32_t format_version = 0;
  uint64_t chunk_size = kDefaultChunkSize;
  uint64_t state_size = 0;
  Sha256Digest state_sha256{};
  uint64_t memory_size = 0;
  std::vector<Sha256Digest> memory_chunks;
  friend bool operator==(const Manifest&, const Manifest&) = default;
};

enum class VerifyMode {
  kStateOnly,  // manifest + state hash + memory file size
  kFull,       // also every memory chunk
};

std::string SerializeManifest(const Manifest& m);
// Strict parser; refuses other format versions (FAILED_PRECONDITION) and anything malformed
// (DATA_LOSS naming the line).
absl::StatusOr<Manifest> ParseManifest(std::string_view text);

// Hashes dir/state and dir/memory (fsyncing memory first, so the manifest never vouches for
// data still only in the page cache) and writes dir/manifest atomically.
absl::Status WriteManifest(const std::filesystem::path& dir,
                           uint64_t chunk_size = kDefaultChunkSize);

// Recomputes and compares. DATA_LOSS on mismatch, naming the file or chunk
// ("memory chunk 3 (bytes 6291456..8388608): SHA-256 mismatch").
absl::Status VerifyManifest(const std::filesystem::path& dir, VerifyMode mode);

// Lowercase hex of a digest, and SHA-256 of a buffer (kernel-stage/digest.h, the one hasher).
std::string HexDigest(const Sha256Digest& d);
Sha256Digest Sha256(std::span<const uint8_t> bytes);

}  // namespace forkd::snapshot
