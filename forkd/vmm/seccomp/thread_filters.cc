#include "forkd/vmm/seccomp/thread_filters.h"

#include <malloc.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "forkd/vmm/seccomp/filter.h"
#include "forkd/vmm/seccomp/precompiled.h"

// Defined only by the test build of forkd-vmm (seccomp/test_hook.cc, linked
// into forkd-vmm-test-hook), never by the shipped binary: there the weak
// reference resolves to null at link time, so no data an attacker could
// overwrite leads to it.
extern "C" __attribute__((weak)) void forkd_vmm_seccomp_test_hook(int kind);

namespace forkd::vmm::seccomp {
namespace {

// Written once by ArmThreadFilters before any thread exists, read-only after.
bool armed = false;

}  // namespace

absl::Status KeepMallocInOneArena() {
  if (::mallopt(M_ARENA_MAX, 1) != 1) return absl::InternalError("mallopt(M_ARENA_MAX, 1) failed");
  return absl::OkStatus();
}

absl::Status ArmThreadFilters() {
  if (armed) return absl::FailedPreconditionError("seccomp filters already armed");
  if (absl::Status st = KeepMallocInOneArena(); !st.ok()) return st;
  // The programs were compiled at build time (precompiled.h): nothing to
  // compile on the restore path, only checked to be there.
  for (ThreadKind kind : kThreadKinds) {
    if (PrecompiledProgram(kind).empty()) {
      return absl::InternalError(
          absl::StrCat("no precompiled seccomp program for ", ThreadKindName(kind), " threads"));
    }
  }
  armed = true;
  return absl::OkStatus();
}

bool ThreadFiltersArmed() { return armed; }

absl::Status EnterThreadOrError(ThreadKind kind) {
  if (!armed) return absl::OkStatus();
  absl::Status st = InstallOnThisThread(PrecompiledProgram(kind));
  if (!st.ok()) {
    return absl::Status(st.code(), absl::StrCat("seccomp filter for a ", ThreadKindName(kind),
                                                " thread: ", st.message()));
  }
  if (forkd_vmm_seccomp_test_hook != nullptr) forkd_vmm_seccomp_test_hook(static_cast<int>(kind));
  return absl::OkStatus();
}

void EnterThread(ThreadKind kind) {
  absl::Status st = EnterThreadOrError(kind);
  if (st.ok()) return;
  const std::string line = absl::StrCat("forkd-vmm: ", st.ToString(), "\n");
  (void)!::write(STDERR_FILENO, line.data(), line.size());
  _exit(1);
}

}  // namespace forkd::vmm::seccomp
