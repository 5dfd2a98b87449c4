// The probe guest's polling virtio-vsock driver: accepts host connections
// on one port and echoes every byte back. CPL3, MMIO only, no interrupts:
// vsock_poll() (called from the payload's main loop) reads the rx used ring
// from memory and only exits to the VMM to notify.
#pragma once

#include "runtime.h"

extern "C" {

// layout::VirtioMmioAddr(layout::kVirtioVsockSlot)
#define VIRTIO_VSOCK_MMIO_BASE 0xd0001000UL

// Returns 1 and the guest CID from config space, or 0 with *why set.
int vsock_init(uint32_t listen_port, uint64_t* cid, const char** why);
// Handles whatever the host sent since the last call.
void vsock_poll(void);

}  // extern "C"
