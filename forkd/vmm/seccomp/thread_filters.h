// The process's per-thread-kind filters.
//
// forkd-vmm arms them once, single-threaded, before it builds the VM; every
// thread then calls EnterThread(kind) as its first statement (machine.cc,
// the device threads, main.cc). Unarmed (library users, unit tests,
// --no-seccomp) EnterThread does nothing.
//
// Ordering in forkd-vmm (Firecracker's): the machine starts with its vCPUs
// parked, every thread installs its own filter, then the main thread
// installs the control filter and only then resumes the vCPUs. A thread
// created after that inherits the control filter on top of its own, which
// is why no thread is created after it.
#pragma once

#include "absl/status/status.h"
#include "forkd/vmm/seccomp/thread_kind.h"

namespace forkd::vmm::seccomp {

// Compiles every kind's allow-list. Call once, before any thread exists.
absl::Status ArmThreadFilters();
bool ThreadFiltersArmed();

// Installs the armed filter of `kind` on the calling thread. A thread that
// cannot be filtered must not go on running: on failure the process ends
// (message on stderr, exit code 1).
void EnterThread(ThreadKind kind);

// The same, for the main thread, reporting the failure instead.
absl::Status EnterThreadOrError(ThreadKind kind);

}  // namespace forkd::vmm::seccomp
