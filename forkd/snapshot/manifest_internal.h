// Pieces of manifest.cc that snapshot_dir.cc also needs. Not part of the public API.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/snapshot/manifest.h"

namespace forkd::snapshot {

// Verifies dir/manifest per `mode` and returns the exact state bytes whose hash matched, so the
// caller parses what was verified rather than re-reading a file that may have changed.
absl::StatusOr<std::vector<uint8_t>> VerifyAndReadState(const std::filesystem::path& dir,
                                                        VerifyMode mode, uint64_t* memory_size);

// Per-chunk SHA-256 of an open memory file of `size` bytes; chunks inside holes are not read.
absl::StatusOr<std::vector<Sha256Digest>> HashMemoryFile(int fd, uint64_t size, uint64_t chunk_size,
                                                         const std::string& name);

}  // namespace forkd::snapshot
