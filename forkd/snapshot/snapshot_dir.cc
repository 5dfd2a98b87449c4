#include "forkd/snapshot/snapshot_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/snapshot/file_io.h"
#include "forkd/snapshot/manifest_internal.h"
#include "forkd/snapshot/state_format.h"

namespace forkd::snapshot {

absl::Status CheckCompatible(const SnapshotHeader& header, const CpuIdentity& host) {
  if (header.format_version != kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot format_version ", header.format_version,
                     " is not supported (this build reads ", kFormatVersion, ")"));
  }
  return CheckCpuCompatible(header.cpu, host);
}

absl::Status SaveSnapshot(const std::filesystem::path& dir, const SnapshotState& state) {
  // Remove the old commit point first: until the new manifest lands, the directory is
  // "incomplete", never "old manifest over new state".
  if (::unlink(ManifestPath(dir).c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "remove old manifest in " + dir.string());
  }
  FORKD_RETURN_IF_ERROR(FsyncDir(dir));
  struct stat st {};
  if (::stat(MemoryPath(dir).c_str(), &st) != 0) {
    return ErrnoStatus(errno, "save snapshot: stat " + MemoryPath(dir).string());
  }
  if (absl::Status s = CheckLayoutFitsFile(state.header.memory, static_cast<uint64_t>(st.st_size));
      !s.ok()) {
    return Annotate(s, "save snapshot " + dir.string());
  }
  FORKD_RETURN_IF_ERROR(WriteState(StatePath(dir), state));
  return WriteManifest(dir);
}

absl::StatusOr<OpenedSnapshot> OpenSnapshot(const std::filesystem::path& dir, VerifyMode mode,
                                            const CpuIdentity& host) {
  OpenedSnapshot out;
  FORKD_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                         VerifyAndReadState(dir, mode, &out.memory_size));
  auto state = ParseState(bytes);
  if (!state.ok()) return Annotate(state.status(), "snapshot " + dir.string());
  out.state = *std::move(state);
  if (absl::Status s = CheckLayoutFitsFile(out.state.header.memory, out.memory_size); !s.ok()) {
    return Annotate(s, "snapshot " + dir.string());
  }
  if (absl::Status s = CheckCompatible(out.state.header, host); !s.ok()) {
    return Annotate(s, "snapshot " + dir.string());
  }
  out.memory_path = MemoryPath(dir);
  return out;
}

}  // namespace forkd::snapshot
