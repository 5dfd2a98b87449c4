#include "forkd/vmm/jail/jail.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

extern char** environ;

namespace forkd::vmm::jail {
namespace {

absl::Status Fail(const std::string& what) {
  return ErrnoStatus(errno, absl::StrCat("jail: ", what));
}

bool SafeAbsolute(const std::string& p) {
  if (p.empty() || p[0] != '/') return false;
  return p.find("/../") == std::string::npos && !p.ends_with("/..") &&
         p.find("/./") == std::string::npos;
}

absl::Status Validate(const JailConfig& c) {
  if (!SafeAbsolute(c.root) || c.root == "/") {
    return absl::InvalidArgumentError("jail: the root must be an absolute directory other than /");
  }
  if (c.uid == 0 || c.gid == 0) {
    return absl::InvalidArgumentError("jail: uid and gid must not be 0");
  }
  for (const auto* list : {&c.read_only, &c.read_write, &c.devices}) {
    for (const std::string& p : *list) {
      if (!SafeAbsolute(p) || p == "/") {
        return absl::InvalidArgumentError(absl::StrCat("jail: bad path to bind: '", p, "'"));
      }
    }
  }
  if (!c.cgroup.empty() && !SafeAbsolute(c.cgroup)) {
    return absl::InvalidArgumentError("jail: the cgroup must be an absolute path");
  }
  return absl::OkStatus();
}

absl::Status JoinCgroup(const std::string& dir) {
  const std::string procs = dir + "/cgroup.procs";
  UniqueFd fd(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return Fail("open " + procs);
  const std::string pid = std::to_string(::getpid());
  if (::write(fd.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size())) {
    return Fail("join cgroup " + dir);
  }
  return absl::OkStatus();
}

// 0 and 1 point at /dev/null unless kept (a later open must never land on
// them and receive stray writes); everything else not kept is closed.
absl::Status CloseInheritedFds(std::vector<int> keep) {
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null) return Fail("open /dev/null");
  for (int std_fd : {STDIN_FILENO, STDOUT_FILENO}) {
    if (std::find(keep.begin(), keep.end(), std_fd) == keep.end() &&
        ::dup2(null.get(), std_fd) < 0) {
      return Fail("dup2 /dev/null");
    }
  }
  null.reset();
  keep.insert(keep.end(), {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO});
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  unsigned int next = 0;
  for (int fd : keep) {
    if (fd < 0) continue;
    if (static_cast<unsigned int>(fd) > next &&
        ::syscall(SYS_close_range, next, static_cast<unsigned int>(fd) - 1, 0) != 0) {
      return Fail("close_range");
    }
    next = static_cast<unsigned int>(fd) + 1;
  }
  if (::syscall(SYS_close_range, next, ~0U, 0) != 0) return Fail("close_range");
  return absl::OkStatus();
}

absl::Status MakeDirs(const std::string& path) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    const std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) return Fail("mkdir " + prefix);
  }
  return absl::OkStatus();
}

// Binds host `path` at the same path under `root`, then applies `flags`
// (MS_RDONLY, MS_NOSUID, ...) to that bind mount.
absl::Status BindAt(const std::string& root, const std::string& path, unsigned long flags) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Fail("stat " + path);
  const std::string target = root + path;
  if (S_ISDIR(st.st_mode)) {
    FORKD_RETURN_IF_ERROR(MakeDirs(target));
  } else {
    FORKD_RETURN_IF_ERROR(MakeDirs(target.substr(0, target.rfind('/'))));
    UniqueFd f(::open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    if (!f) return Fail("create mount point " + target);
  }
  if (::mount(path.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return Fail("bind " + path);
  }
  if (::mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | flags, nullptr) != 0) {
    return Fail("remount " + path);
  }
  return absl::OkStatus();
}

absl::Status BuildRootAndPivot(const JailConfig& c) {
  if (::unshare(CLONE_NEWNS) != 0) return Fail("unshare(CLONE_NEWNS)");
  // Nothing we mount propagates back to the host, nor the host's to us.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return Fail("make / private");
  }
  if (::mount("forkd-vmm-jail", c.root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=0755,size=64k,nr_inodes=256") != 0) {
    return Fail("tmpfs on " + c.root);
  }
  constexpr unsigned long kData = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  for (const std::string& p : c.read_only)
    FORKD_RETURN_IF_ERROR(BindAt(c.root, p, kData | MS_RDONLY));
  for (const std::string& p : c.read_write) FORKD_RETURN_IF_ERROR(BindAt(c.root, p, kData));
  for (const std::string& p : c.devices) {
    FORKD_RETURN_IF_ERROR(BindAt(c.root, p, MS_NOSUID | MS_NOEXEC));
  }
  if (::mount(nullptr, c.root.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | kData, nullptr) != 0) {
    return Fail("remount the jail root read-only");
  }
  if (::chdir(c.root.c_str()) != 0) return Fail("chdir " + c.root);
  // pivot_root(".", "."): the old root ends up on top of the new one and is
  // detached at once, so no path leads back to the host's file system.
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return Fail("pivot_root");
  if (::umount2(".", MNT_DETACH) != 0) return Fail("detach the old root");
  if (::chdir("/") != 0) return Fail("chdir /");
  return absl::OkStatus();
}

absl::Status SetLimit(int resource, uint64_t value, const char* name) {
  rlimit r{value, value};
  if (::setrlimit(resource, &r) != 0) return Fail(absl::StrCat("setrlimit ", name));
  return absl::OkStatus();
}

// clearenv() only drops the pointers; /proc/<pid>/environ shows the
// original bytes, so they are zeroed first.
void ClearEnvironment() {
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::memset(*e, 0, std::strlen(*e));
  }
  (void)::clearenv();
}

absl::Status DropPrivileges(const JailConfig& c) {
  // The bounding and ambient sets need CAP_SETPCAP: empty them while root.
  for (int cap = 0; ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return Fail(absl::StrCat("drop cap ", cap));
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    return Fail("clear ambient capabilities");
  }
  // uid 0 never regains capabilities (no exec happens, but also no setuid
  // back: the saved uid goes too), and these bits cannot be changed again.
  const unsigned long bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |
                             SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
                             SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  if (::prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) != 0) return Fail("securebits");
  if (::setgroups(0, nullptr) != 0) return Fail("setgroups");
  if (::setresgid(c.gid, c.gid, c.gid) != 0) return Fail("setresgid");
  if (::setresuid(c.uid, c.uid, c.uid) != 0) return Fail("setresuid");
  // Leaving uid 0 already cleared permitted and effective; say so explicitly
  // and check, since a missed capability would void the rest.
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &hdr, data) != 0) return Fail("capset");
  if (::syscall(SYS_capget, &hdr, data) != 0) return Fail("capget");
  for (const auto& d : data) {
    if (d.effective != 0 || d.permitted != 0 || d.inheritable != 0) {
      return absl::InternalError("jail: capabilities left after the drop");
    }
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Fail("PR_SET_NO_NEW_PRIVS");
  // Not dumpable: /proc/<pid> belongs to root, so another VMM running as the
  // same uid cannot ptrace or read this one. Set after the uid change, which
  // resets it.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return Fail("PR_SET_DUMPABLE");
  // Also after the uid change, which clears it.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return Fail("PR_SET_PDEATHSIG");
  if (c.expected_parent > 0 && ::getppid() != c.expected_parent) {
    return absl::FailedPreconditionError("jail: the parent is already gone");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EnterJail(const JailConfig& config) {
  FORKD_RETURN_IF_ERROR(Validate(config));
  if (::geteuid() != 0) {
    return absl::FailedPreconditionError(
        "jail: needs root (mount namespace, pivot_root, uid change)");
  }
  if (!config.cgroup.empty()) FORKD_RETURN_IF_ERROR(JoinCgroup(config.cgroup));
  FORKD_RETURN_IF_ERROR(CloseInheritedFds(config.keep_fds));
  FORKD_RETURN_IF_ERROR(BuildRootAndPivot(config));
  FORKD_RETURN_IF_ERROR(SetLimit(RLIMIT_NOFILE, config.limits.nofile, "NOFILE"));
  FORKD_RETURN_IF_ERROR(SetLimit(RLIMIT_FSIZE, config.limits.fsize, "FSIZE"));
  FORKD_RETURN_IF_ERROR(SetLimit(RLIMIT_NPROC, config.limits.nproc, "NPROC"));
  FORKD_RETURN_IF_ERROR(SetLimit(RLIMIT_CORE, 0, "CORE"));
  ClearEnvironment();
  return DropPrivileges(config);
}

}  // namespace forkd::vmm::jail
