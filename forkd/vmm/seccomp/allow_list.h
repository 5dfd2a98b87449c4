// What each kind of forkd-vmm thread may call, as data: the filters
// (filter.h) are compiled from it and docs/vmm-seccomp.md is generated from
// it (forkd-vmm --print-seccomp), so the document cannot drift from the code.
//
// Everything not listed kills the whole process with SIGSYS.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "forkd/vmm/seccomp/thread_kind.h"

namespace forkd::vmm::seccomp {

// How a listed syscall's arguments are narrowed further.
enum class ArgRule {
  kAny,          // any arguments
  kIoctlList,    // arg 1 (request) is one of AllowList::ioctls
  kNoExec,       // mmap / mprotect: arg 2 (prot) without PROT_EXEC
  kKillSignals,  // tgkill: arg 2 (signal) is the vCPU kick, SIGTERM or SIGABRT
  kUnixSocket,   // socket: arg 0 (domain) is AF_UNIX
  kFcntlFlags,   // fcntl: F_GETFD/F_SETFD/F_GETFL/F_SETFL only
};

struct Syscall {
  const char* name;  // as libseccomp spells it (seccomp_syscall_resolve_name)
  ArgRule rule = ArgRule::kAny;
  const char* why;
};

struct Ioctl {
  unsigned long request;
  const char* name;
};

struct AllowList {
  ThreadKind kind;
  std::vector<Syscall> syscalls;
  std::vector<Ioctl> ioctls;  // for ArgRule::kIoctlList
};

const AllowList& AllowListFor(ThreadKind kind);

// The signals ArgRule::kKillSignals lets tgkill send.
std::vector<int> AllowedKillSignals();

// docs/vmm-seccomp.md, generated from the allow-lists.
std::string RenderMarkdown();

}  // namespace forkd::vmm::seccomp
