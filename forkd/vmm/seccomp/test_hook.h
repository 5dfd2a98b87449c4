// Test-only: makes the first thread of one kind attempt a call its filter
// forbids, right after installing the filter. Linked only into
// forkd-vmm-test-hook (tests), never into forkd-vmm.
#pragma once

#include "forkd/vmm/seccomp/thread_kind.h"

namespace forkd::vmm::seccomp {

void SetForbiddenAttempt(ThreadKind kind);

// What the attempt calls for `kind` (for the test's positive check that the
// call really is outside the allow-list).
const char* ForbiddenAttemptName(ThreadKind kind);

// Makes the attempt now (the test-hook binary and the unit test use it).
void AttemptForbiddenCall(ThreadKind kind);

}  // namespace forkd::vmm::seccomp
