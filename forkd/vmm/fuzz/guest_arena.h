// Fake guest memory for the harnesses: a real anonymous mapping of bounded
// size (GuestMemory::Anonymous), made once per process and zeroed before
// each input, so an out-of-range guest address meets GuestMemory's own
// bounds checks, exactly as in a VM.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "forkd/vmm/vstate/memory.h"

namespace forkd::vmm::fuzz {

template <uint64_t kSize>
const GuestMemory& FreshGuestMemory() {
  static GuestMemory* mem = [] {
    auto m = GuestMemory::Anonymous(kSize);
    if (!m.ok()) std::abort();
    return new GuestMemory(std::move(*m));
  }();
  std::memset(mem->host_base(), 0, mem->size());
  return *mem;
}

}  // namespace forkd::vmm::fuzz
