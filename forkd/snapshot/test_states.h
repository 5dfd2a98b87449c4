// Test-only: fully populated SnapshotStates and helpers to locate sections in encoded files.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "forkd/snapshot/state.h"
#include "forkd/snapshot/state_format.h"

namespace forkd::snapshot::testing {

// Every kvm struct filled with random bytes (seeded), `vcpus` vCPUs with varied XSAVE sizes and
// MSR lists, two memory regions, `devices` devices. Valid per ValidateState.
SnapshotState RandomState(uint32_t seed, uint32_t vcpus = 2, uint32_t devices = 3);

// Smallest valid state: 1 vCPU, 4 KiB XSAVE, no MSRs, one region, no devices.
SnapshotState MinimalState();

struct SectionRef {
  size_t header_offset = 0;   // where the section's tag is
  size_t payload_offset = 0;  // where its payload starts
  uint64_t length = 0;
};

// The `index`-th section with `tag` in a well-formed encoding (test helper: no validation).
SectionRef FindSection(std::span<const uint8_t> file, SectionTag tag, size_t index = 0);

void PutU32(std::vector<uint8_t>& b, size_t at, uint32_t v);
void PutU64(std::vector<uint8_t>& b, size_t at, uint64_t v);

}  // namespace forkd::snapshot::testing
