// Credits host-supplied entropy to the guest kernel's random pool.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace forkd::agent {

// Opens `random_device` (normally /dev/random) and issues RNDADDENTROPY with
// `entropy`, crediting 8 bits per byte. OK only if the ioctl succeeded: that is
// the kernel accepting the bytes *as entropy* and reseeding its CRNG from them.
// There is deliberately no fallback to a plain write(): an uncredited write
// mixes bytes in without reseeding, and Mitos's fallback of that kind let a fork
// that had not reseeded pass the host's gate.
//
// Refuses fewer than kMinEntropyBytes or more than kMaxEntropyBytes.
absl::Status CreditEntropy(const std::string& random_device, std::string_view entropy);

}  // namespace forkd::agent
