// Reseeds the guest kernel's CRNG from host-supplied entropy.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace forkd::agent {

// ioctl(2) on the random device; injectable so tests can make each of the
// two calls fail. Returns what ioctl returns and leaves errno set on failure.
using RandomIoctl = std::function<int(int fd, unsigned long request, void* arg)>;

// Opens `random_device` (normally /dev/random) and
//  1. issues RNDADDENTROPY with `entropy`, crediting 8 bits per byte: the
//     bytes are mixed into the kernel's input pool; then
//  2. issues RNDRESEEDCRNG: the CRNG's output key is replaced *now* from the
//     input pool, which holds those bytes.
// Both are needed. Since Linux 5.18 RNDADDENTROPY credits nothing once the
// CRNG is ready (always, in a restored template) and the output key is only
// replaced at the next scheduled reseed, up to a minute later: sibling forks
// would keep returning identical getrandom() output until then.
// OK only if both ioctls succeeded; the error names the one that failed.
// There is deliberately no fallback to a plain write(): it mixes bytes in
// without reseeding, and Mitos's fallback of that kind let a fork that had not
// reseeded pass the host's gate. Both ioctls need CAP_SYS_ADMIN.
//
// Refuses fewer than kMinEntropyBytes or more than kMaxEntropyBytes.
// An empty `ioctl_fn` calls the real ioctl(2).
absl::Status ReseedCrng(const std::string& random_device, std::string_view entropy,
                        const RandomIoctl& ioctl_fn = {});

}  // namespace forkd::agent
