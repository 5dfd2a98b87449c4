#include "forkd/sandbox/jail_args.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <optional>

#include "common/errno_status.h"
#include "common/unique_fd.h"
#include "forkd/sandbox/vmm_child.h"

namespace forkd::sandbox {
namespace fs = std::filesystem;

namespace {

std::optional<uint32_t> ParseU32(std::string_view s) {
  uint32_t v = 0;
  const auto* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end) return std::nullopt;
  return v;
}

// mkdir (an existing directory is fine), then chown and chmod: the mode and
// owner are always the ones asked for, whatever an earlier run left.
absl::Status MakeDir(const fs::path& dir, uid_t uid, mode_t mode) {
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
    return ErrnoStatus(errno, "mkdir " + dir.string());
  }
  if (::chown(dir.c_str(), uid, uid) != 0) {
    return ErrnoStatus(errno, "chown " + dir.string() + " to " + std::to_string(uid));
  }
  if (::chmod(dir.c_str(), mode) != 0) return ErrnoStatus(errno, "chmod " + dir.string());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JailPolicy> ParseUidRange(const std::string& text) {
  const size_t dash = text.find('-');
  std::optional<uint32_t> first, last;
  if (dash != std::string::npos) {
    first = ParseU32(std::string_view(text).substr(0, dash));
    last = ParseU32(std::string_view(text).substr(dash + 1));
  }
  if (!first || !last) {
    return absl::InvalidArgumentError("uid range '" + text + "' is not FIRST-LAST");
  }
  if (*first == 0 || *last < *first) {
    return absl::InvalidArgumentError("uid range '" + text +
                                      "': FIRST must be above 0 and at most LAST");
  }
  JailPolicy p;
  p.uid_first = *first;
  p.uid_count = *last - *first + 1;
  return p;
}

absl::StatusOr<uint32_t> UidPool::Acquire() {
  if (policy_.shared) return policy_.uid_first;
  std::lock_guard lock(mu_);
  for (uint32_t i = 0; i < policy_.uid_count; i++) {
    const uint32_t uid = policy_.uid_first + (next_ + i) % policy_.uid_count;
    if (used_.insert(uid).second) {
      next_ = (next_ + i + 1) % policy_.uid_count;
      return uid;
    }
  }
  return absl::ResourceExhaustedError(
      "every uid of --vmm-uid-range " + std::to_string(policy_.uid_first) + "-" +
      std::to_string(policy_.uid_first + policy_.uid_count - 1) + " is in use");
}

void UidPool::MarkUsed(uint32_t uid) {
  if (policy_.shared) return;
  std::lock_guard lock(mu_);
  used_.insert(uid);
}

void UidPool::Release(uint32_t uid) {
  if (policy_.shared) return;
  std::lock_guard lock(mu_);
  used_.erase(uid);
}

bool UidPool::Contains(uint32_t uid) const {
  return uid >= policy_.uid_first && uid - policy_.uid_first < policy_.uid_count;
}

VmmJail JailLayout(const fs::path& vm_dir, uint32_t uid) {
  return VmmJail{.uid = uid,
                 .root = vm_dir / "jail",
                 .socket_dir = vm_dir / "vm",
                 .snapshot_dir = vm_dir / "snap"};
}

absl::Status PrepareJailDirs(const VmmJail& jail) {
  FORKD_RETURN_IF_ERROR(MakeDir(jail.root, 0, 0700));
  FORKD_RETURN_IF_ERROR(MakeDir(jail.socket_dir, jail.uid, 0700));
  return MakeDir(jail.snapshot_dir, jail.uid, 0700);
}

std::vector<std::string> JailArgs(const JailPolicy& policy, const VmmJail& jail) {
  if (!policy.enabled) return {"--no-jail"};
  const std::string id = std::to_string(jail.uid);
  // The jail closes every inherited fd it is not told to keep: forkd's
  // duplicate of its control end must stay, or the control socket reaches
  // EOF when forkd dies and the VM stops instead of waiting to be adopted.
  return {"--jail-root", jail.root.string(),
          "--jail-uid",  id,
          "--jail-gid",  id,
          "--jail-rw",   jail.snapshot_dir.string(),
          "--keep-fd",   std::to_string(kControlKeeperFd)};
}

absl::StatusOr<std::vector<std::string>> PrepareBuildJail(const JailPolicy& policy,
                                                          std::optional<uint32_t> uid,
                                                          const fs::path& work) {
  if (!policy.enabled) return std::vector<std::string>{"--no-jail"};
  if (!uid || *uid == 0) return absl::InternalError("a jailed template build needs its uid");
  FORKD_RETURN_IF_ERROR(MakeDir(work, *uid, 0700));
  FORKD_RETURN_IF_ERROR(MakeDir(work / "jail", 0, 0700));
  const std::string id = std::to_string(*uid);
  return std::vector<std::string>{
      "--jail-root", (work / "jail").string(), "--jail-uid", id, "--jail-gid", id};
}

absl::Status SealSnapshotDir(const fs::path& dir) {
  // The writer was an unprivileged VMM: nothing it left is followed or
  // trusted. Every entry is opened without following a symlink and must be
  // a plain file with one link (or a directory); only then is it changed.
  auto seal = [](const fs::path& p, bool want_dir) -> absl::Status {
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) return ErrnoStatus(errno, "open " + p.string() + " (a symlink is refused)");
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "fstat " + p.string());
    const bool ok = want_dir ? S_ISDIR(st.st_mode) : (S_ISREG(st.st_mode) && st.st_nlink == 1);
    if (!ok) {
      return absl::PermissionDeniedError("snapshot entry " + p.string() +
                                         " is not a plain file or directory of its own");
    }
    if (::fchown(fd.get(), 0, 0) != 0) return ErrnoStatus(errno, "chown " + p.string());
    if (::fchmod(fd.get(), want_dir ? 0755 : 0644) != 0) {
      return ErrnoStatus(errno, "chmod " + p.string());
    }
    return absl::OkStatus();
  };
  FORKD_RETURN_IF_ERROR(seal(dir, true));
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    const auto type = it->symlink_status(ec).type();
    if (ec) break;
    FORKD_RETURN_IF_ERROR(seal(it->path(), type == fs::file_type::directory));
  }
  if (ec) return absl::InternalError("list " + dir.string() + ": " + ec.message());
  return absl::OkStatus();
}

}  // namespace forkd::sandbox
