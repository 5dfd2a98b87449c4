// Whole-file I/O used by the snapshot writer and reader.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd::snapshot {

// Writes `bytes` to a temp file beside `path`, fsyncs it, renames it over `path` and fsyncs the
// directory. A crash leaves either the old file or the new one, never a partial one (a stray
// ".<name>.tmp.XXXXXX" at worst, which no reader looks at).
absl::Status WriteFileAtomically(const std::filesystem::path& path, std::span<const uint8_t> bytes);

// Reads a whole regular file; OUT_OF_RANGE if it is larger than `max_bytes` (checked before
// allocating).
absl::StatusOr<std::vector<uint8_t>> ReadFileBounded(const std::filesystem::path& path,
                                                     uint64_t max_bytes);

// fsync of a directory, so a rename or unlink inside it is durable.
absl::Status FsyncDir(const std::filesystem::path& dir);

}  // namespace forkd::snapshot
