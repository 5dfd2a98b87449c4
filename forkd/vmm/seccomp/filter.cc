#include "forkd/vmm/seccomp/filter.h"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::vmm::seccomp {
namespace {

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

// libseccomp returns -errno.
absl::Status Check(int rc, std::string_view what) {
  if (rc < 0) return ErrnoStatus(-rc, what);
  return absl::OkStatus();
}

absl::Status AddRule(scmp_filter_ctx ctx, int nr, const Syscall& s, const AllowList& list) {
  const std::string what = absl::StrCat("seccomp rule for ", s.name);
  switch (s.rule) {
    case ArgRule::kAny:
      return Check(seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0), what);
    case ArgRule::kIoctlList:
      for (const Ioctl& i : list.ioctls) {
        // The request is an unsigned int in the kernel: compare the low 32 bits.
        FORKD_RETURN_IF_ERROR(Check(
            seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                             SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL, i.request & 0xffffffffULL)),
            absl::StrCat(what, " ", i.name)));
      }
      return absl::OkStatus();
    case ArgRule::kNoExec:
      return Check(
          seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)),
          what);
    case ArgRule::kKillSignals:
      for (int sig : AllowedKillSignals()) {
        FORKD_RETURN_IF_ERROR(
            Check(seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                                   SCMP_A2(SCMP_CMP_EQ, static_cast<scmp_datum_t>(sig))),
                  what));
      }
      return absl::OkStatus();
    case ArgRule::kUnixSocket:
      return Check(seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX)),
                   what);
    case ArgRule::kFcntlFlags:
      for (int cmd : {F_GETFD, F_SETFD, F_GETFL, F_SETFL}) {
        FORKD_RETURN_IF_ERROR(
            Check(seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                                   SCMP_A1(SCMP_CMP_EQ, static_cast<scmp_datum_t>(cmd))),
                  what));
      }
      return absl::OkStatus();
  }
  return absl::InternalError(what + ": unknown argument rule");
}

}  // namespace

absl::StatusOr<BpfProgram> Compile(const AllowList& list) {
  Ctx ctx(seccomp_init(SCMP_ACT_KILL_PROCESS));
  if (!ctx) return absl::InternalError("seccomp_init failed");
  // Only the native ABI: x32 and i386 system calls are killed outright.
  FORKD_RETURN_IF_ERROR(Check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "NNP attr"));
  for (const Syscall& s : list.syscalls) {
    const std::string name = s.name;
    const int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr == __NR_SCMP_ERROR) return absl::InternalError("unknown syscall " + name);
    FORKD_RETURN_IF_ERROR(AddRule(ctx.get(), nr, s, list));
  }
  // seccomp_export_bpf writes to an fd: a memfd keeps it in memory.
  UniqueFd mem(static_cast<int>(::syscall(SYS_memfd_create, "seccomp-bpf", MFD_CLOEXEC)));
  if (!mem) return ErrnoStatus(errno, "memfd_create");
  FORKD_RETURN_IF_ERROR(Check(seccomp_export_bpf(ctx.get(), mem.get()), "seccomp_export_bpf"));
  const off_t size = ::lseek(mem.get(), 0, SEEK_END);
  if (size < 0) return ErrnoStatus(errno, "lseek seccomp-bpf");
  if (size == 0 || size % sizeof(sock_filter) != 0) {
    return absl::InternalError(absl::StrCat("seccomp program of ", size, " bytes"));
  }
  BpfProgram prog;
  prog.insns.resize(static_cast<size_t>(size) / sizeof(sock_filter));
  const ssize_t n = ::pread(mem.get(), prog.insns.data(), static_cast<size_t>(size), 0);
  if (n != size) return ErrnoStatus(n < 0 ? errno : EIO, "read seccomp-bpf");
  return prog;
}

absl::Status InstallOnThisThread(std::span<const sock_filter> program) {
  if (program.empty() || program.size() > BPF_MAXINSNS) {
    return absl::InvalidArgumentError(
        absl::StrCat("seccomp program of ", program.size(), " instructions"));
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return ErrnoStatus(errno, "PR_SET_NO_NEW_PRIVS");
  }
  sock_fprog fprog{};
  fprog.len = static_cast<unsigned short>(program.size());
  // The kernel copies the program; it never writes through this pointer.
  fprog.filter = const_cast<sock_filter*>(program.data());
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) {
    return ErrnoStatus(errno, "seccomp(SECCOMP_SET_MODE_FILTER)");
  }
  return absl::OkStatus();
}

}  // namespace forkd::vmm::seccomp
