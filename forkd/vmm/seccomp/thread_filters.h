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

// Compiles every kind's allow-list and keeps malloc in one arena
// (KeepMallocInOneArena). Call once, before any thread exists.
absl::Status ArmThreadFilters();

// glibc gives threads malloc arenas of their own, and the first time one of
// those arenas' heaps shrinks it reads /proc/sys/vm/overcommit_memory
// (openat, glibc's check_may_shrink_heap), a call only the control thread may
// make: a device thread freeing a burst of large buffers (the vsock muxer
// moving a 200 KiB agent frame to a Linux guest) was killed with SIGSYS. With
// M_ARENA_MAX 1 every thread allocates from the main arena, which grows and
// shrinks with brk. Call before any other thread exists (arenas already made
// would still be used).
absl::Status KeepMallocInOneArena();
bool ThreadFiltersArmed();

// Installs the armed filter of `kind` on the calling thread. A thread that
// cannot be filtered must not go on running: on failure the process ends
// (message on stderr, exit code 1).
void EnterThread(ThreadKind kind);

// The same, for the main thread, reporting the failure instead.
absl::Status EnterThreadOrError(ThreadKind kind);

}  // namespace forkd::vmm::seccomp
