// Every thread kind's seccomp program, compiled from its allow-list
// (allow_list.h) by libseccomp at build time (generate_programs.cc writes
// the generated precompiled_programs.cc), as Firecracker's seccompiler
// does: forkd-vmm installs ready BPF and never runs the compiler on its
// restore path, and the programs live in read-only data.
//
// `vmm_seccomp_test` (PrecompiledProgramsMatchTheAllowLists) recompiles
// every list and requires the same instructions, so the data cannot drift
// from the lists or from the libseccomp the tests run with.
#pragma once

#include <linux/filter.h>

#include <span>

#include "forkd/vmm/seccomp/thread_kind.h"

namespace forkd::vmm::seccomp {

std::span<const sock_filter> PrecompiledProgram(ThreadKind kind);

}  // namespace forkd::vmm::seccomp
