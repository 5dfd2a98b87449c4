// The probe guest's polling virtio-mmio driver (CPL3, MMIO only, no
// interrupts: the VMM completes a request during the notify's MMIO exit, and
// the driver then reads the used ring). One queue per device, 8 entries.
#pragma once

#include "runtime.h"

extern "C" {

// layout::VirtioMmioAddr(layout::kVirtioRngSlot)
#define VIRTIO_RNG_MMIO_BASE 0xd0000000UL

// Initialises the virtio-rng device at VIRTIO_RNG_MMIO_BASE. Returns 1, or 0
// with *why set.
int virtio_rng_init(const char** why);
// Fills out[0..len) (len <= 64) with device entropy. Returns 1, or 0 with *why.
int virtio_rng_read(uint8_t* out, uint32_t len, const char** why);

}  // extern "C"
