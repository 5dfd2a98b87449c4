// The VM generation ID (Microsoft's "Virtual Machine Generation ID" spec, as
// read by Linux's drivers/virt/vmgenid.c): 16 bytes in guest memory at
// layout::kVmGenIdAddr, described by the DSDT's VGEN device. forkd-vmm writes
// fresh random bytes at boot and again on every restore, then raises the GED
// interrupt (layout::kGedIrq) whose _EVT sends Notify(VGEN, 0x80): the guest's
// driver sees a new value and reseeds its CRNG by itself.
//
// Defence in depth only, never a replacement for the reseed gate: a guest
// without the driver (or without ACPI) ignores it, and nothing tells the host
// whether the guest did reseed. forkd serves a fork only on the agent's answer.
#pragma once

#include <array>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/vmm/vstate/memory.h"

namespace forkd::vmm::acpi {

using GenerationId = std::array<uint8_t, 16>;

// Writes 16 bytes from getrandom() at `gpa` and returns them.
absl::StatusOr<GenerationId> WriteNewGenerationId(const GuestMemory& mem, uint64_t gpa);
absl::StatusOr<GenerationId> ReadGenerationId(const GuestMemory& mem, uint64_t gpa);

}  // namespace forkd::vmm::acpi
